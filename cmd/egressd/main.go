// Command egressd is an egress forward proxy for cloud VPCs: HTTP, CONNECT and
// SOCKS5 clients reach only the hosts and ports the policy allows.
//
//	egressd serve    [--config FILE]
//	egressd check    --config FILE [--client IP] [--user NAME] HOST:PORT
//	egressd check    --config FILE --replay LOG [--json]
//	egressd validate --config FILE
//	egressd learn    [--config FILE] [--since DURATION] [--min-count N] [--fold N] [--diff] LOG...
//	egressd health   [--config FILE | --addr HOST:PORT]
//	egressd config   schema | defaults
//	egressd version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `egressd: an egress forward proxy (HTTP, CONNECT, SOCKS5) with one policy engine.

Usage:
  egressd serve    [--config FILE]          run the proxy (no --config: the embedded default,
                                            report mode on 127.0.0.1:3128/1080/9090)
  egressd check    --config FILE [--client IP] [--user NAME] HOST:PORT
                                            print the decision, rule and reason for one
                                            destination; exit 0 allow, 1 deny, 2 error
  egressd check    --config FILE --replay LOG [--json]
                                            which lines of the log would change decision
                                            under FILE; exit 0 none, 1 some, 2 error
  egressd validate --config FILE            exit 0, or print every error (file:line: key: ...)
  egressd learn    [--config FILE] [--since DURATION] [--min-count N] [--fold N] [--diff] LOG...
                                            propose a policy from access logs (per group,
                                            folded by the Public Suffix List); --diff: only
                                            what would change against --config
  egressd health   [--config FILE | --addr HOST:PORT]
                                            GET /readyz of a running egressd; exit 0 ready,
                                            1 not ready or down (container health checks)
  egressd config   schema | defaults        print the config's JSON Schema, or every key at
                                            its default with its description
  egressd version                           print the version

Run "egressd COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdin, stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "learn":
		return cmdLearn(args[1:], stdin, stdout, stderr)
	case "health":
		return cmdHealth(args[1:], stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "egressd %s\n", version)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "egressd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
