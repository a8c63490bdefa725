package main

import (
	"encoding/json"
	"fmt"

	"github.com/prometheus/common/version"
)

// CheckConfigCmd validates the configuration and prints the effective one.
type CheckConfigCmd struct{}

// Run prints the effective configuration as JSON, in the config file's
// own layout, so it can be saved as a config file.
func (c *CheckConfigCmd) Run(cfg *Config, e *env) error {
	src := "no config file (defaults, environment and flags only)"
	if e.file != nil {
		src = "config file " + e.file.path
	}
	fmt.Fprintf(e.stderr, "configuration is valid: %s\n", src)
	b, err := json.MarshalIndent(cfg, "", "    ")
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, string(b))
	return nil
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints version, revision, branch, build user and date, and Go version.
func (v *VersionCmd) Run(e *env) error {
	fmt.Fprintln(e.stdout, version.Print("ntpexp"))
	return nil
}
