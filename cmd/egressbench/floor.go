package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The floor subcommand measures what any proxy pays, on this machine, for
// one request and its answer with another process: the least a parent
// proxy can add to a tunnel (egressd must wait for the parent's answer to
// CONNECT before it answers its client). One process (egressbench floor
// -serve, pinned where the parent runs) answers each read with a CONNECT
// success line; another (egressbench floor -to, pinned where egressd runs,
// with its environment) measures its own CPU in three phases:
//
//   - tick: woken at the paced rate, doing nothing else (what a wake-up
//     from idle costs here);
//   - exchange_paced: woken at the paced rate, each time writing a CONNECT
//     head and reading the answer on one kept connection (so no TCP
//     handshake): the wake-up plus the exchange, which here also sleeps
//     and wakes once more while the other process answers;
//   - exchange_loop: -conc connections exchanging back to back, the
//     process never idle: the exchange's system calls alone.
//
// exchange_paced minus tick is the floor at the paced rate;
// exchange_loop is the floor at saturation.

// floorKind is the Result kind of the floor's phases: no proxy table
// shows it.
const floorKind = "exchange"

// Scenarios of the floor subcommand.
const (
	floorTick   = "tick"
	floorPaced  = "exchange_paced"
	floorLoop   = "exchange_loop"
	floorLabel  = "floor"
	floorAnswer = "HTTP/1.1 200 Connection established\r\n\r\n"
	floorAsk    = "CONNECT origin.bench.test:443 HTTP/1.1\r\nHost: origin.bench.test:443\r\n\r\n"
)

type floorConfig struct {
	Serve, To, JSONOut string
	Rate               float64
	Ops, LoopOps, Conc int
	Run                int
	MaxTime            time.Duration
}

func floorMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c floorConfig
	fs.StringVar(&c.Serve, "serve", "", "answer exchanges on this loopback ip:port until SIGINT or SIGTERM")
	fs.StringVar(&c.To, "to", "", "measure exchanges with the -serve process at this loopback ip:port")
	fs.Float64Var(&c.Rate, "rate", 2000, "wake-ups per second in the tick and exchange_paced phases (make bench: the tunnels_paced rate)")
	fs.IntVar(&c.Ops, "n", 10000, "wake-ups in each paced phase")
	fs.IntVar(&c.LoopOps, "loop-n", 200000, "exchanges in the exchange_loop phase")
	fs.IntVar(&c.Conc, "conc", 8, "connections in the exchange_loop phase")
	fs.IntVar(&c.Run, "run", 1, "repetition number, for the report")
	fs.StringVar(&c.JSONOut, "json", "", "append one JSON result per phase to this file")
	fs.DurationVar(&c.MaxTime, "max-time", 2*time.Minute, "bound on the whole measurement")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case (c.Serve == "") == (c.To == ""):
		return errors.New("want exactly one of -serve and -to")
	case c.Rate <= 0 || c.Ops <= 0 || c.LoopOps <= 0 || c.Conc <= 0:
		return errors.New("-rate, -n, -loop-n and -conc must be positive")
	}
	if c.Serve != "" {
		if err := loopbackOnly(c.Serve); err != nil {
			return fmt.Errorf("-serve: %w", err)
		}
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer cancel()
		ln, err := net.Listen("tcp", c.Serve)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "egressbench: floor server %s\n", ln.Addr())
		serveFloor(ctx, ln)
		return nil
	}
	if err := loopbackOnly(c.To); err != nil {
		return fmt.Errorf("-to: %w", err)
	}
	results, err := measureFloor(c)
	if err != nil {
		return err
	}
	var out io.Writer = io.Discard
	if c.JSONOut != "" {
		f, err := os.OpenFile(c.JSONOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	for _, r := range results {
		fmt.Fprintln(stdout, r.summary())
		if err := r.writeJSON(out); err != nil {
			return err
		}
	}
	return nil
}

// serveFloor answers every read on every connection ln accepts with
// floorAnswer until ctx ends; then it closes ln and the connections.
func serveFloor(ctx context.Context, ln net.Listener) {
	var wg sync.WaitGroup
	var conns connSet
	go func() {
		<-ctx.Done()
		ln.Close()
		conns.closeAll()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		if !conns.add(c) {
			c.Close()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				if _, err := io.WriteString(c, floorAnswer); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// exchange writes one CONNECT head on c and reads the whole answer.
func exchange(c net.Conn, buf []byte) error {
	if _, err := io.WriteString(c, floorAsk); err != nil {
		return err
	}
	for got := 0; got < len(floorAnswer); {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		got += n
	}
	return nil
}

// measureFloor runs the three phases against the -serve process at c.To.
func measureFloor(c floorConfig) ([]*Result, error) {
	deadline := time.Now().Add(c.MaxTime)
	dial := func() (net.Conn, error) {
		conn, err := net.DialTimeout("tcp", c.To, 5*time.Second)
		if err == nil {
			err = conn.SetDeadline(deadline)
		}
		return conn, err
	}
	result := func(scenario string, start time.Time, cpu0 time.Duration, ops int64, conc int, rate float64) *Result {
		el, cpu := time.Since(start), (selfCPU() - cpu0).Seconds()
		r := &Result{Label: floorLabel, Kind: floorKind, Run: c.Run, Scenario: scenario, Time: start,
			Seconds: el.Seconds(), Concurrency: conc, TargetRate: rate, Ops: ops,
			OpsPerSec: float64(ops) / el.Seconds(), ToolCPUSec: cpu, ProxyCPUSec: &cpu}
		r.TimeBound = time.Now().After(deadline)
		r.per1000()
		return r
	}
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	// Warm the connection and the code paths before measuring.
	for i := 0; i < 100; i++ {
		if err := exchange(conn, buf); err != nil {
			return nil, err
		}
	}

	paced := func(scenario string, op func() error) (*Result, error) {
		// Paced as the tool's paced scenarios are: the n-th wake-up no
		// earlier than n/rate after the start (a late timer runs the ones
		// due back to back, as it starts tunnels).
		start, cpu0 := time.Now(), selfCPU()
		var ops int64
		for ops < int64(c.Ops) && time.Now().Before(deadline) {
			due := start.Add(time.Duration(float64(ops) / c.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			if err := op(); err != nil {
				return nil, err
			}
			ops++
		}
		return result(scenario, start, cpu0, ops, 1, c.Rate), nil
	}
	tick, err := paced(floorTick, func() error { return nil })
	if err != nil {
		return nil, err
	}
	pacedEx, err := paced(floorPaced, func() error { return exchange(conn, buf) })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", floorPaced, err)
	}

	conns := make([]net.Conn, c.Conc)
	for i := range conns {
		if conns[i], err = dial(); err != nil {
			return nil, err
		}
		defer conns[i].Close()
	}
	per := c.LoopOps / c.Conc
	errs := make(chan error, c.Conc)
	start, cpu0 := time.Now(), selfCPU()
	for _, cn := range conns {
		go func() {
			b := make([]byte, 4096)
			for i := 0; i < per; i++ {
				if err := exchange(cn, b); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", floorLoop, err)
	}
	loop := result(floorLoop, start, cpu0, int64(per*c.Conc), c.Conc, 0)
	return []*Result{tick, pacedEx, loop}, nil
}
