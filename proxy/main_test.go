package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// The expirable LRU (the DNS and auth caches) runs a goroutine that cannot
// be stopped (hashicorp/golang-lru v2.0.7).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/golang-lru/v2/expirable.NewLRU[...].func1"))
}
