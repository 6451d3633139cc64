// Package config owns egressd's config file: the whole-file schema (Config,
// documented key by key in docs/config-schema.md), the embedded default
// (default.yaml), and loading it strictly.
//
// Loading has three steps. Parse decodes the YAML node tree by the yaml tags
// of Config, rejecting unknown keys, duplicate keys and wrong types;
// validation checks values and cross-field rules; policy.Compile checks and
// compiles the policy section. Every problem found by any step is reported at
// once (errors.Join of *Error), each as "FILE:LINE: key.path: message".
// Omitted keys, and keys written with no value, take the schema's defaults.
//
// Sizes are bytes or a number with a unit ("64KiB", "10MB"); durations are Go
// durations ("5s", "2m"). Listener addresses are not reloadable.
package config
