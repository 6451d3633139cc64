package deployments

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (the IMDS stand-in
// of TestASGDrain is the only server these tests start).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
