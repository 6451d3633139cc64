package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/egressd/egressd/proxy/auth"
	"github.com/egressd/egressd/proxy/inspect"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML) to check")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd validate --config FILE

Parses, validates and compiles FILE exactly as "serve" and a reload would,
and loads the auth.users_file and the tls_inspection files it names.
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
	cfg, _, _, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The users file is part of what serve loads: check it the same way.
	if cfg.Auth.UsersFile != "" {
		if _, err := auth.Load(cfg.Auth.UsersFile); err != nil {
			fmt.Fprintf(stderr, "auth.users_file: %v\n", err)
			return 1
		}
	}
	// So is tls_inspection's CA (its key's permissions too) and roots.
	if _, err := inspect.Load(cfg.TLSInspection.Inspect(), nil); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}
