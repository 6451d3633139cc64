package egress

import (
	"fmt"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// testIP is the loopback address the tests listen on. Not 127.0.0.1:
// load tests on a shared machine can leave all of its ports in TIME_WAIT.
const testIP = "127.0.0.77"

// pairListener is the one listener tcpPair accepts on: binding a fresh
// port per connection fails when a busy machine has its ephemeral ports in
// TIME_WAIT, while connects to one fixed port still find free tuples.
var pairListener *net.TCPListener

func TestMain(m *testing.M) {
	if os.Getenv(benchPeerEnv) != "" {
		os.Exit(runBenchPeer())
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP(testIP)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pairListener = ln
	code := m.Run()
	ln.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
