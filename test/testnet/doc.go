// Package testnet holds the in-process network fixtures that need no
// *testing.T: an authoritative DNS server ([DNSServer]) and a throwaway
// certificate authority ([CA]). Both serve loopback or network namespaces
// their user created; neither reaches anything else.
//
// test/testenv wraps them for tests (namespaces, t.Fatal, t.Cleanup), and
// cmd/egressbench uses them directly: the benchmark binary links this
// package and not testenv, which would bring test-only code (testing,
// goleak) into a command.
package testnet
