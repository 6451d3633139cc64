package main

import (
	"flag"
	"fmt"
	"io"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML) to check")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd validate --config FILE

Parses, validates and compiles FILE exactly as "serve" and a reload would.
Exit 0 when it is valid; otherwise every error is printed, one per line, as
FILE:LINE: key.path: message, and the exit status is 1.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *path == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	if _, _, _, err := loadConfig(*path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}
