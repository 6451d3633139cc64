// Package test holds egressd's black-box tests: the built binary, driven over
// real sockets by real clients (curl, Go's http.Transport, SOCKS5 clients),
// against origins, DNS servers and honeypots inside network namespaces the
// tests create, so forbidden addresses are provably never reached.
package test

import (
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
