// Package socks is egressd's SOCKS5 front end: RFC 1928 CONNECT, with RFC
// 1929 username and password when users are configured. One state machine
// (session.go) serves every connection the accept pipeline hands it, from
// the greeting to the relay, refusals included: no acceptable method
// (0xFF), a failed password (RFC 1929 status 1), commands other than
// CONNECT (0x07), unknown address types (0x08), a policy denial (0x02), a
// name that did not resolve (0x04), a failed dial (its reply read from the
// syscall error: 0x05 refused, 0x03 network unreachable, 0x04 host
// unreachable, 0x01 otherwise), and the general failure (0x01) of a
// connection past a limit.
//
// It makes no policy choice: it asks the shared Decider once per request
// with the name as sent (no DNS lookup before the policy has matched it),
// dials only the decision's pinned addresses, and hands the connection to
// tunnel.Runner, which runs the same SNI guard, splice relay and access line
// as CONNECT. A request whose rule inspects it (tunnel.Runner.Inspects) is
// not dialed: after the success reply (bound address zero) and the guard,
// tunnel.Runner.Inspect hands it to proxy/inspect.
//
// github.com/armon/go-socks5 is the reference this package is held to:
// the server uses its exported wire constants, and the tests run its Server
// (built only in _test.go files) beside the state machine on the same bytes
// (TestStateMachineMatchesLibrary, FuzzStateMachineMatchesLibrary) and its
// request parser beside ours (FuzzParseRequest). Where go-socks5 is hostile
// to an egress proxy (it resolves names before its RuleSet runs, permits
// all, has no deadlines, takes the client's order of methods), the state
// machine does what this package says, and the oracle in the tests is
// configured to agree.
package socks
