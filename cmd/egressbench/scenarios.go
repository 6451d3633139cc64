package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// bench runs the scenarios of one invocation against one proxy.
type bench struct {
	cfg  runConfig
	o    *origins
	d    *dialer
	out  func(*Result) error
	zero []byte   // read-only fallback upload source
	bufs [][]byte // fallback read buffer per bulk stream
	tls  *tls.Config
	// inspectTLS trusts the inspection CA (-pki): the inspect kind's
	// clients. Nil without -pki.
	inspectTLS *tls.Config

	httpIP, echoIP, bulkIP *target // plain scenarios address origins by IP literal
	tlsName                *target // the TLS scenario addresses its origin by name
}

// meter measures one scenario: wall time, this process's CPU, and the proxy
// tree's CPU and footprint.
type meter struct {
	b     *bench
	t0    time.Time
	self0 time.Duration
	p0    procSample
	dns0  int64
}

func (b *bench) startMeter() (*meter, error) {
	m := &meter{b: b, self0: selfCPU(), dns0: b.o.DNSQueries()}
	if b.cfg.ProxyPID > 0 {
		p, err := sampleProc(b.cfg.ProxyPID)
		if err != nil {
			return nil, err
		}
		m.p0 = p
	}
	m.t0 = time.Now()
	return m, nil
}

// stop fills the measured fields of r. elapsed, when non-zero, replaces the
// meter's own wall time (loops measure their own, without the tear-down).
func (m *meter) stop(r *Result, elapsed time.Duration) error {
	if elapsed == 0 {
		elapsed = time.Since(m.t0)
	}
	r.Time = m.t0
	r.Seconds = elapsed.Seconds()
	r.ToolCPUSec = (selfCPU() - m.self0).Seconds()
	r.DNSQueries = m.b.o.DNSQueries() - m.dns0
	if m.b.cfg.ProxyPID > 0 {
		p, err := sampleProc(m.b.cfg.ProxyPID)
		if err != nil {
			return err
		}
		cpu := float64(p.CPUTicks-m.p0.CPUTicks) / clockTicksPerSec
		r.ProxyCPUSec = &cpu
		r.ProxyRSSKiB = p.RSSKiB
		r.ProxyFDs = p.FDs
	}
	return nil
}

func (b *bench) newResult(scenario string) *Result {
	return &Result{Label: b.cfg.Label, Kind: b.cfg.Kind, Auth: b.cfg.auth.set(), Run: b.cfg.Run, Scenario: scenario}
}

// op is one unit of work of a loop, run by one worker; close releases what
// the worker holds.
type op struct {
	run   func() error
	close func()
}

// loopResult is what loop measured.
type loopResult struct {
	lat        []latencies
	ok, errs   int64
	firstErr   error
	elapsed    time.Duration
	timedOut   bool
	reconnects atomic.Int64
	bytes      atomic.Int64 // response body bytes read (keep-alive ops)
}

// loop runs up to count operations over conc workers, each worker with its
// own op from newOp, until the count is done, limit has passed, ctx ends, or
// MaxErrors operations have failed. It first runs warm operations that are
// not measured, then calls onStart.
//
// With rate 0 the loop is closed: each worker starts its next operation as
// soon as the last one ends, so the rate is what the proxy (or the load
// tool) can sustain and latency includes queueing at that saturation. With
// rate > 0 the n-th operation starts no earlier than n/rate seconds after
// the start (open loop, paced): every proxy gets the same load, below its
// capacity, and the latencies compare like for like.
func (b *bench) loop(ctx context.Context, conc, count, warm int, limit time.Duration, rate float64, newOp func(*loopResult) op, onStart func() error) (*loopResult, error) {
	lr := &loopResult{lat: make([]latencies, conc)}
	ops := make([]op, conc)
	for i := range ops {
		ops[i] = newOp(lr)
	}
	defer func() {
		for _, o := range ops {
			o.close()
		}
	}()
	for i := 0; i < warm; i++ {
		if err := ops[i%conc].run(); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	lr.reconnects.Store(0)
	lr.bytes.Store(0)
	if err := onStart(); err != nil {
		return nil, err
	}
	var (
		next, errs atomic.Int64
		errOnce    sync.Once
		wg         sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(limit)
	for w := range conc {
		lr.lat[w] = make(latencies, 0, count/conc+1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && errs.Load() < int64(b.cfg.MaxErrors) {
				n := next.Add(1)
				if n > int64(count) {
					return
				}
				if rate > 0 {
					due := start.Add(time.Duration(float64(n-1) / rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				}
				if time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				if err := ops[w].run(); err != nil {
					errs.Add(1)
					errOnce.Do(func() { lr.firstErr = err })
					continue
				}
				lr.lat[w] = append(lr.lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	lr.elapsed = time.Since(start)
	lr.errs = errs.Load()
	for _, l := range lr.lat {
		lr.ok += int64(len(l))
	}
	lr.timedOut = lr.ok+lr.errs < int64(count) && ctx.Err() == nil && lr.errs < int64(b.cfg.MaxErrors)
	return lr, nil
}

// finishLoop turns a loop's measurement into a Result.
func (b *bench) finishLoop(r *Result, m *meter, lr *loopResult, conc int, rate float64) error {
	if err := m.stop(r, lr.elapsed); err != nil {
		return err
	}
	r.Concurrency = conc
	r.TargetRate = rate
	r.Ops = lr.ok
	r.Errors = lr.errs
	if lr.firstErr != nil {
		r.FirstError = lr.firstErr.Error()
	}
	r.TimeBound = lr.timedOut
	r.Reconnects = lr.reconnects.Load()
	if r.Seconds > 0 {
		r.OpsPerSec = float64(r.Ops) / r.Seconds
	}
	r.P50Ms, r.P99Ms, _ = summarize(lr.lat...)
	r.per1000()
	if r.Bytes > 0 && r.Seconds > 0 {
		r.MiBPerSec = float64(r.Bytes) / (1 << 20) / r.Seconds
		r.perGiB()
	}
	return b.out(r)
}

// runTunnels measures new tunnels per second: each operation opens a tunnel,
// sends one small HTTP request with Connection: close, reads the answer and
// closes. The origin closes first, so TIME_WAIT stays on the origin's side:
// a proxy that binds its outgoing sockets explicitly (Dante) would otherwise
// run out of ephemeral ports over tens of thousands of tunnels, since the
// kernel reuses TIME_WAIT ports only for connect()'s own port choice. With
// tlsCfg set the tunnel is opened by host name and carries a full TLS handshake
// (SNI = that name, no session resumption) before the request: with the
// origin, or with a proxy that inspects (tlsCfg trusting its CA).
func (b *bench) runTunnels(ctx context.Context, scenario string, tlsCfg *tls.Config, count int, limit time.Duration, conc int, rate float64) error {
	useTLS := tlsCfg != nil
	t := b.httpIP
	if useTLS {
		t = b.tlsName
	}
	req := getRequest("/", net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))), true, proxyAuth{})
	newOp := func(*loopResult) op {
		br := bufio.NewReaderSize(nil, 4096)
		return op{close: func() {}, run: func() error {
			c, err := b.d.tunnel(t)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(b.cfg.Timeout))
			var rw io.ReadWriter = c
			if useTLS {
				tc := tls.Client(c, tlsCfg)
				if err := tc.Handshake(); err != nil {
					return fmt.Errorf("tls handshake: %w", err)
				}
				rw = tc
			}
			br.Reset(rw)
			_, err = roundTrip(rw, br, req)
			return err
		}}
	}
	r := b.newResult(scenario)
	var m *meter
	lr, err := b.loop(ctx, conc, count, 2*b.cfg.Conc, limit, rate, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", scenario, err)
	}
	return b.finishLoop(r, m, lr, conc, rate)
}

// runKeepAlive measures request latency through one long-lived tunnel: one
// request at a time, each answered before the next is sent.
func (b *bench) runKeepAlive(ctx context.Context) error {
	t := b.httpIP
	req := getRequest("/", net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))), false, proxyAuth{})
	newOp := b.keepAliveOp(func() (net.Conn, error) { return b.d.tunnel(t) }, req)
	r := b.newResult("keepalive")
	var m *meter
	lr, err := b.loop(ctx, 1, b.cfg.KARequests, 100, b.cfg.KATime, 0, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	return b.finishLoop(r, m, lr, 1, 0)
}

// keepAliveOp returns ops that send req over a kept-alive connection from
// dial, one request at a time, dialing again when the server closes.
func (b *bench) keepAliveOp(dial func() (net.Conn, error), req []byte) func(*loopResult) op {
	return b.keepAliveOpFunc(dial, func() []byte { return req })
}

// keepAliveOpFunc is keepAliveOp with the request of each operation from
// next, counting the response bodies' bytes in the loop's result.
func (b *bench) keepAliveOpFunc(dial func() (net.Conn, error), next func() []byte) func(*loopResult) op {
	return func(lr *loopResult) op {
		var c net.Conn
		br := bufio.NewReaderSize(nil, 4096)
		return op{
			close: func() {
				if c != nil {
					c.Close()
				}
			},
			run: func() error {
				if c == nil {
					var err error
					if c, err = dial(); err != nil {
						return err
					}
					lr.reconnects.Add(1)
					br.Reset(c)
				}
				_ = c.SetDeadline(time.Now().Add(b.cfg.Timeout))
				keep, n, err := roundTripN(c, br, next())
				lr.bytes.Add(n)
				if err != nil || !keep {
					c.Close()
					c = nil
				}
				return err
			},
		}
	}
}

// runForward measures absolute-URI HTTP forwarding: Conc clients, each with
// a keep-alive connection to the proxy (to the origin for direct), one
// request at a time.
func (b *bench) runForward(ctx context.Context, scenario string, count int, limit time.Duration, conc int, rate float64) error {
	o := b.o.Addr("http")
	hostport := o.String()
	var req []byte
	dialAddr := b.cfg.Proxy
	if b.cfg.Kind == kindDirect {
		req = getRequest("/", hostport, false, proxyAuth{})
		dialAddr = hostport
	} else {
		req = getRequest("http://"+hostport+"/", hostport, false, b.cfg.auth)
	}
	nd := net.Dialer{Timeout: b.cfg.Timeout}
	newOp := b.keepAliveOp(func() (net.Conn, error) { return nd.Dial("tcp", dialAddr) }, req)
	r := b.newResult(scenario)
	var m *meter
	lr, err := b.loop(ctx, conc, count, 4*b.cfg.Conc, limit, rate, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", scenario, err)
	}
	return b.finishLoop(r, m, lr, conc, rate)
}

// runCache measures a proxy's HTTP cache: CacheConc keep-alive clients
// fetch objects of size through it, one request at a time. For hits every
// request asks for one URL, stored by the warm-up requests before the
// measurement starts; for misses every request asks for a URL not asked
// before, which the proxy fetches from the origin and stores (evicting
// older objects once its cache is full).
func (b *bench) runCache(ctx context.Context, scenario string, size int, hit bool) error {
	hostport := b.o.Addr("http").String()
	base := "http://" + hostport + cachePath(size)
	var next func() []byte
	if hit {
		req := getRequest(base+"hit", hostport, false, b.cfg.auth)
		next = func() []byte { return req }
	} else {
		// Unique per run and label, so that no proxy ever has one stored.
		prefix := fmt.Sprintf("%smiss-%s-%d-%d-", base, b.cfg.Label, b.cfg.Run, time.Now().UnixNano())
		var n atomic.Int64
		next = func() []byte {
			return getRequest(prefix+strconv.FormatInt(n.Add(1), 10), hostport, false, b.cfg.auth)
		}
	}
	nd := net.Dialer{Timeout: b.cfg.Timeout}
	newOp := b.keepAliveOpFunc(func() (net.Conn, error) { return nd.Dial("tcp", b.cfg.Proxy) }, next)
	r := b.newResult(scenario)
	var m *meter
	lr, err := b.loop(ctx, b.cfg.CacheConc, b.cfg.CacheRequests, 2*b.cfg.CacheConc, b.cfg.CacheTime, 0, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", scenario, err)
	}
	r.Bytes = lr.bytes.Load() // the measured operations' response bodies
	return b.finishLoop(r, m, lr, b.cfg.CacheConc, 0)
}

// runBulk moves BulkBytes in total over streams tunnels, all in one
// direction, bounded by BulkTime.
func (b *bench) runBulk(ctx context.Context, upload bool, streams int) error {
	dir := "down"
	if upload {
		dir = "up"
	}
	scenario := fmt.Sprintf("bulk_%s_%d", dir, streams)
	per := b.cfg.BulkBytes / int64(streams)
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := b.d.tunnel(b.bulkIP)
		if err != nil {
			return fmt.Errorf("%s: %w", scenario, err)
		}
		conns = append(conns, c)
	}
	// Stop every stream at the time bound or when ctx ends.
	stopAt := time.Now().Add(b.cfg.BulkTime)
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			_ = c.SetDeadline(time.Now())
		}
	})
	defer stop()
	r := b.newResult(scenario)
	m, err := b.startMeter()
	if err != nil {
		return err
	}
	var (
		wg       sync.WaitGroup
		moved    atomic.Int64
		errs     atomic.Int64
		bounded  atomic.Bool
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(stopAt)
			n, err := b.bulkStream(c, upload, per, b.bufs[i])
			moved.Add(n)
			var ne net.Error
			switch {
			case err == nil:
			case errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(stopAt):
				// Stopped by the time bound, not a failure.
				bounded.Store(true)
			default:
				errs.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := m.stop(r, elapsed); err != nil {
		return err
	}
	r.Concurrency = streams
	r.Bytes = moved.Load()
	r.Errors = errs.Load()
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	r.TimeBound = bounded.Load()
	r.MiBPerSec = float64(r.Bytes) / (1 << 20) / r.Seconds
	r.perGiB()
	return b.out(r)
}

// bulkStream runs the client side of the bulk protocol on c and returns the
// payload bytes moved. buf serves only the fallback for non-TCP conns.
func (b *bench) bulkStream(c net.Conn, upload bool, n int64, buf []byte) (int64, error) {
	var hdr [bulkHeaderLen]byte
	hdr[0] = bulkDownload
	if upload {
		hdr[0] = bulkUpload
	}
	binary.BigEndian.PutUint64(hdr[8:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, err
	}
	if upload {
		done, err := b.o.src.send(c, n, b.zero)
		if err != nil {
			return done, err
		}
		var ack [1]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return done, fmt.Errorf("waiting for upload ack: %w", err)
		}
		return done, nil
	}
	return discard(c, n, buf)
}

// runIdle opens IdleTunnels tunnels to the echo origin, proves each with one
// byte each way, and reads the proxy's RSS and descriptors before and while
// they are held.
func (b *bench) runIdle(ctx context.Context) error {
	if b.cfg.ProxyPID <= 0 {
		return errors.New("idle: needs -proxy-pid")
	}
	r := b.newResult("idle")
	// Warm the proxy's lazy state with a few short tunnels, then let them
	// finish before the baseline is read.
	for range 16 {
		c, err := b.d.tunnel(b.echoIP)
		if err != nil {
			return fmt.Errorf("idle: warm-up: %w", err)
		}
		err = echoOnce(c, b.cfg.Timeout)
		c.Close()
		if err != nil {
			return fmt.Errorf("idle: warm-up: %w", err)
		}
	}
	settle(ctx, b.cfg.Settle)
	p0, err := sampleProc(b.cfg.ProxyPID)
	if err != nil {
		return err
	}
	m, err := b.startMeter()
	if err != nil {
		return err
	}
	n := b.cfg.IdleTunnels
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		next, opened, errs atomic.Int64
		errOnce            sync.Once
		firstErr           error
		wg                 sync.WaitGroup
	)
	deadline := time.Now().Add(b.cfg.IdleTime)
	for range b.cfg.Conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && errs.Load() < int64(b.cfg.MaxErrors) && time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := b.d.tunnel(b.echoIP)
				if err == nil {
					if err = echoOnce(c, b.cfg.Timeout); err != nil {
						c.Close()
					}
				}
				if err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				conns[i] = c
				opened.Add(1)
			}
		}()
	}
	wg.Wait()
	settle(ctx, b.cfg.Settle)
	p1, err := sampleProc(b.cfg.ProxyPID)
	if err != nil {
		return err
	}
	if err := m.stop(r, 0); err != nil {
		return err
	}
	k := opened.Load()
	r.Ops = k
	r.Errors = errs.Load()
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	r.Concurrency = b.cfg.Conc
	r.per1000()
	r.Idle = &IdleResult{
		Tunnels: int(k), RSS0KiB: p0.RSSKiB, RSS1KiB: p1.RSSKiB, FDs0: p0.FDs, FDs1: p1.FDs,
		PSS0KiB: p0.PSSKiB, PSS1KiB: p1.PSSKiB, Procs0: p0.Procs, Procs1: p1.Procs,
	}
	if k > 0 {
		r.Idle.KiBPerTunnel = float64(p1.RSSKiB-p0.RSSKiB) / float64(k)
		r.Idle.PSSKiBPerTunnel = float64(p1.PSSKiB-p0.PSSKiB) / float64(k)
		r.Idle.FDsPerTunnel = float64(p1.FDs-p0.FDs) / float64(k)
	}
	return b.out(r)
}

// echoOnce sends one byte through c and waits for it to come back.
func echoOnce(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	return c.SetDeadline(time.Time{})
}

// settle waits d (or until ctx ends) so that the proxy finishes closing or
// setting up connections before its footprint is read. The proxy gives no
// completion signal to wait on instead.
func settle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// newTargets builds the destinations the scenarios use.
func (b *bench) newTargets() error {
	var err error
	ip := b.cfg.originIP
	mk := func(which string) (*target, error) {
		ap := b.o.Addr(which)
		return newTarget(ap.Addr().String(), ap.Port(), ip, b.cfg.auth)
	}
	if b.httpIP, err = mk("http"); err != nil {
		return err
	}
	if b.echoIP, err = mk("echo"); err != nil {
		return err
	}
	if b.bulkIP, err = mk("bulk"); err != nil {
		return err
	}
	b.tlsName, err = newTarget(b.cfg.Name, b.o.Addr("tls").Port(), ip, b.cfg.auth)
	return err
}
