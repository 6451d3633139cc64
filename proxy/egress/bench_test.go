package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// The relay benchmarks run the load (client and origin) in a child process,
// so the CPU the benchmark reports (getrusage of this process) is the
// relay's alone: what a proxy would spend per GiB tunneled.
const benchPeerEnv = "EGRESS_BENCH_PEER"

// benchBytes is moved per benchmark op, client to origin.
const benchBytes = 256 << 20

// runBenchPeer is the child: it listens as the origin, prints its address,
// and for each "go" line on stdin connects to the relay's listener as the
// client, sends benchBytes, reads everything back to EOF on the origin side
// and prints "done".
func runBenchPeer() int {
	relayAddr := os.Getenv(benchPeerEnv)
	ln, err := net.Listen("tcp4", testIP+":0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr())
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		c, err := net.Dial("tcp4", relayAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var wg sync.WaitGroup
		var got int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, _ = io.Copy(io.Discard, o)
			o.Close()
		}()
		for sent := 0; sent < benchBytes; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				break
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		wg.Wait()
		c.Close()
		fmt.Println("done", got)
	}
	return 0
}

type relayFunc func(client, upstream *net.TCPConn)

// onlyWriter and onlyReader hide ReadFrom/WriteTo so io.CopyBuffer really
// copies through user space.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

var relayImpls = []struct {
	name  string
	relay relayFunc
}{
	{"splice", func(c, u *net.TCPConn) { Relay(c, u, RelayOptions{}) }},
	{"copy", func(c, u *net.TCPConn) { Relay(c, u, RelayOptions{NoSplice: true}) }},
	// The stdlib's io.Copy between two *net.TCPConn splices too, but holds
	// a pipe per direction for the tunnel's whole life (6 fds per tunnel).
	{"stdlib-io.Copy", func(c, u *net.TCPConn) { pairCopy(c, u, func(dst, src *net.TCPConn) { io.Copy(dst, src) }) }},
	// What a plain user-space relay costs.
	{"stdlib-io.CopyBuffer", func(c, u *net.TCPConn) {
		pairCopy(c, u, func(dst, src *net.TCPConn) {
			io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, make([]byte, 32<<10))
		})
	}},
}

func pairCopy(c, u *net.TCPConn, cp func(dst, src *net.TCPConn)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); cp(u, c); u.CloseWrite() }()
	cp(c, u)
	c.CloseWrite()
	wg.Wait()
	c.Close()
	u.Close()
}

// BenchmarkRelay reports throughput (MB/s) and the relay's own CPU time
// per GiB tunneled (cpu-s/GiB), over loopback.
func BenchmarkRelay(b *testing.B) {
	for _, impl := range relayImpls {
		b.Run(impl.name, func(b *testing.B) { benchRelay(b, impl.relay) })
	}
}

func benchRelay(b *testing.B, relay relayFunc) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP(testIP)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchPeerEnv+"="+ln.Addr().String())
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		b.Fatal("peer did not start")
	}
	originAddr, err := net.ResolveTCPAddr("tcp4", out.Text())
	if err != nil {
		b.Fatal(err)
	}

	b.SetBytes(benchBytes)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for range b.N {
		fmt.Fprintln(stdin, "go")
		client, err := ln.AcceptTCP()
		if err != nil {
			b.Fatal(err)
		}
		upstream, err := net.DialTCP("tcp4", nil, originAddr)
		if err != nil {
			b.Fatal(err)
		}
		relay(client, upstream)
		if !out.Scan() || out.Text() != "done "+strconv.Itoa(benchBytes) {
			b.Fatalf("peer: %q", out.Text())
		}
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := tv(ru1.Utime) + tv(ru1.Stime) - tv(ru0.Utime) - tv(ru0.Stime)
	gib := float64(b.N) * benchBytes / (1 << 30)
	b.ReportMetric(cpu/gib, "cpu-s/GiB")
	b.ReportMetric((tv(ru1.Stime)-tv(ru0.Stime))/gib, "sys-s/GiB")
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
