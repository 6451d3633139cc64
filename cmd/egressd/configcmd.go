package main

import (
	"fmt"
	"io"

	"github.com/egressd/egressd/proxy/config"
)

const configUsage = `Usage: egressd config schema | defaults

  schema     print the config file's JSON Schema (draft-07), generated from the
             Go config types; docs/egressd.schema.json is this output
             (regenerate: make schema). Point an editor's YAML support at it:
             # yaml-language-server: $schema=<path or URL of egressd.schema.json>
  defaults   print every key at its default (the value a file that omits it
             gets), each with its description; egressd validate accepts it
`

func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	var out []byte
	var err error
	switch args[0] {
	case "schema":
		out, err = config.Schema()
	case "defaults":
		out, err = config.MarshalDefaults()
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stderr, configUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "egressd config: unknown subcommand %q\n\n%s", args[0], configUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "egressd config %s: %v\n", args[0], err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		return 1
	}
	return 0
}
