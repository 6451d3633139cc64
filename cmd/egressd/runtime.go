package main

import (
	"os"
	"runtime"

	"go.uber.org/zap"
)

// logRuntime writes one diagnostics line with the Go runtime settings the
// process started with. Operators set them in the environment where they
// set every runtime knob (the systemd unit's Environment=, the image's ENV,
// the Kubernetes manifest's env): GODEBUG, which deployments/ sets to keep
// the runtime's sysmon thread out of deep sleep (README, "Runtime settings
// for a farm"), GOGC and GOMEMLIMIT. egressd itself sets none of them; the
// line shows what this process actually got.
func logRuntime(diag *zap.Logger) {
	diag.Info("go runtime",
		zap.String("godebug", os.Getenv("GODEBUG")),
		zap.String("gogc", os.Getenv("GOGC")),
		zap.String("gomemlimit", os.Getenv("GOMEMLIMIT")),
		zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)),
		zap.String("go_version", runtime.Version()),
	)
}
