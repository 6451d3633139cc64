//go:build !linux

package main

// keepSysmonAwake is Linux-only (see sysmon_linux.go).
func keepSysmonAwake() {}
