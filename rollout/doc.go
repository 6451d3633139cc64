// Package rollout owns the tools that take a farm from report to enforce:
// reading egressd's JSON access logs (plain, gzip or stdin, many instances
// at once), proposing a policy from them (Learn, behind `egressd learn`) and
// replaying their destinations against a config (Replay, behind `egressd
// check --replay`).
//
// Every decision it shows comes from policy (Compile, Engine.Decide,
// Match), the engine the proxy runs; rollout owns only the log reading, the
// aggregation, the folding of names into wildcards (by the Public Suffix
// List, private section included), and the output. It does no network I/O
// but the DNS lookups a replay makes through the resolver it is given.
package rollout
