package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/egressd/egressd/rollout"
)

func cmdLearn(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("learn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the current config: keep its other sections and deny rules, learn per client group")
	since := fs.Duration("since", 0, "only lines newer than this (e.g. 168h); 0: every line")
	minCount := fs.Int64("min-count", 1, "propose a name (or wildcard) on a port only when seen at least this often")
	fold := fs.Int("fold", rollout.DefaultFold, "fold this many distinct names under one domain into a \"*.\" wildcard; 0 never folds")
	diff := fs.Bool("diff", false, "print only what would change against --config, and the rules that saw no traffic")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd learn [--config FILE] [--since DURATION] [--min-count N] [--fold N] [--diff] LOG...

Reads egressd access logs (JSON lines; plain or gzip files, "-" for stdin;
the logs of many instances at once) and prints a proposed config, a whole
file "egressd validate" accepts: per client group, the hosts and ports of
the decision=allow and decision=report lines, each rule with a comment of
its counts and first and last seen.

- Names are folded into "*." wildcards only where --fold distinct names
  share a parent at or below one registrable domain, by the Public Suffix
  List with its private section: *.com, *.co.uk or *.github.io never.
- IP-literal destinations become cidrs rules.
- decision=deny lines, and report lines for reasons a rule cannot fix (SNI,
  protocol), are never proposed: they are listed after the policy as
  findings to investigate.
- With --config: the file's other sections are kept, its deny rules come
  first unchanged (never loosened), lines count for the client's group (a
  client in no group is a finding: a rule for any client would open its
  destinations to every group), and names that resolved into deny_ranges
  keep the allow_ranges that let them.
- --diff (needs --config): what the proposal would add, and which of
  today's rules, hosts and cidrs saw no traffic (candidates to remove).

Memory grows with the number of distinct destinations, not with lines.
A progress line goes to stderr when stderr is a terminal.
Exit status: 0, or 2 for usage, config and read errors.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	opt := rollout.LearnOptions{Since: *since, MinCount: *minCount, Fold: *fold, ConfigName: *path}
	if *path != "" {
		raw, err := os.ReadFile(*path)
		if err != nil {
			fmt.Fprintf(stderr, "egressd learn: %v\n", err)
			return 2
		}
		opt.Config = raw
	}
	if isTerminal(stderr) {
		opt.Progress = progressLine(stderr)
	}
	var sources []rollout.Source
	for _, a := range fs.Args() {
		sources = append(sources, rollout.Source{Path: a, Stdin: stdin})
	}
	lr, err := rollout.Learn(sources, opt, *diff)
	if err != nil {
		fmt.Fprintf(stderr, "egressd learn: %v\n", err)
		return 2
	}
	if *diff {
		stdout.Write(lr.Diff())
		return 0
	}
	out, err := lr.Proposal()
	if err != nil {
		fmt.Fprintf(stderr, "egressd learn: %v\n", err)
		return 2
	}
	stdout.Write(out)
	return 0
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine rewrites one line on w with the lines read so far.
func progressLine(w io.Writer) rollout.Progress {
	start := time.Now()
	return func(c rollout.Counts, file string, done bool) {
		if done {
			fmt.Fprint(w, "\r\033[K")
			return
		}
		secs := time.Since(start).Seconds()
		fmt.Fprintf(w, "\r\033[K%s: %d lines, %.0f lines/s", file, c.Lines, float64(c.Lines)/max(secs, 0.001))
	}
}
