package config

import "github.com/egressd/egressd/policy"

// LoadBytes parses, validates and compiles a config already read from name,
// so the caller can hash exactly the bytes that were loaded.
func LoadBytes(data []byte, name string) (*Config, *policy.Policy, error) {
	return parse(data, name)
}
