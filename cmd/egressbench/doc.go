// Command egressbench is egressd's load tool and benchmark report generator.
//
// It owns everything the benchmark needs on the load side, in one process on
// loopback: the origins (a bulk TCP sink/source, an echo server for idle
// tunnels, an HTTP origin, an HTTPS origin whose certificate is signed by a
// test CA generated at start) and a DNS server that maps names under
// bench.test to the origins' loopback address. The CA and the DNS server are
// test/testnet's, the ones the end-to-end tests use (through test/testenv,
// which this command does not import: it would link test-only code). It
// drives a proxy under test through one of its client kinds (connect, socks5,
// http, or direct for no proxy) and measures throughput, rates, latency
// percentiles and, when given the proxy's PID, the proxy's CPU time, RSS and
// open descriptors from /proc.
//
// Usage:
//
//	egressbench run    -kind connect -proxy 127.0.0.1:3128 -proxy-pid 1234 -label egressd -json results/x.json
//	egressbench report -in 'results/*.json' -out docs/benchmarks.md -svg docs/benchmarks.svg
//	egressbench ports  -n 4
//	egressbench parent -listen 127.0.0.1:3129
//	egressbench floor  -serve 127.0.0.1:3129 & egressbench floor -to 127.0.0.1:3129 -rate 2000 -json results/floor.json
//
// Each scenario writes one JSON object per line to -json and one line of human
// summary to stdout. The report subcommand reads those files, takes the median
// over runs, and writes the Markdown tables and an SVG chart; with -inline it
// also tabulates the in-line gateway's figure from the output of test/'s
// BenchmarkInlineTunnel, which needs network namespaces this tool never
// creates. The parent subcommand is the minimal CONNECT proxy of the runs
// through a parent; floor measures the least a parent adds on this
// machine (one request and its answer with another process; floor.go).
//
// Every loop is bounded in count and in time, and the tool only ever dials or
// listens on loopback addresses.
package main
