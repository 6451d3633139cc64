package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// postBody returns size bytes of a JSON array of API records, the kind of
// body a DLP profile inspects: ids, timestamps, amounts, names, e-mail
// addresses, phone numbers, prose and short base64 fields, and no secret.
// Deterministic, so every proxy and every run sends the same bytes.
func postBody(size int) []byte {
	r := rand.New(rand.NewPCG(7, 11))
	const hex = "0123456789abcdef"
	rnd := func(alphabet string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	words := []string{"order", "shipped", "invoice", "customer", "warehouse", "priority", "delayed", "refund",
		"the", "and", "for", "with", "parcel", "tracking", "address", "note", "review", "status"}
	var b bytes.Buffer
	b.WriteString("[")
	for k := 0; b.Len() < size; k++ {
		if k > 0 {
			b.WriteString(",")
		}
		var note bytes.Buffer
		for range 8 + r.IntN(12) {
			note.WriteString(words[r.IntN(len(words))])
			note.WriteByte(' ')
		}
		blob := make([]byte, 24+r.IntN(40))
		for i := range blob {
			blob[i] = byte(r.Uint32())
		}
		fmt.Fprintf(&b, `{"id":"%s-%s-4%s-a%s-%s","created_at":"2026-12-%02dT%02d:%02d:%02d.%03dZ","amount":%d.%02d,"currency":"EUR",`+
			`"qty":%d,"sku":"SKU-%06d","customer":{"id":%d,"name":"Customer %d","email":"c%d@example.com","phone":"+1-415-555-%04d"},`+
			`"note":"%s","thumb":"%s"}`,
			rnd(hex, 8), rnd(hex, 4), rnd(hex, 3), rnd(hex, 3), rnd(hex, 12), 1+k%28, k%24, k%60, (k*7)%60, k%1000,
			r.IntN(100000), r.IntN(100), 1+r.IntN(20), r.IntN(1000000), r.IntN(1e7), k, k, r.IntN(10000),
			bytes.TrimSpace(note.Bytes()), base64.StdEncoding.EncodeToString(blob))
	}
	out := b.Bytes()[:size-1]
	return append(out, ']')
}

// postRequest is a POST of body to the HTTP origin: absolute-URI through a
// proxy, origin-form for direct.
func (b *bench) postRequest(body []byte) (req []byte, dialAddr string) {
	hostport := b.o.Addr("http").String()
	uri, dialAddr := "http://"+hostport+"/upload", b.cfg.Proxy
	auth := b.cfg.auth
	if b.cfg.Kind == kindDirect {
		uri, dialAddr, auth = "/upload", hostport, proxyAuth{}
	}
	head := "POST " + uri + " HTTP/1.1\r\nHost: " + hostport + "\r\nUser-Agent: egressbench\r\n" + auth.header() +
		"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	return append([]byte(head), body...), dialAddr
}

// runPost measures forwarded POSTs of size-byte bodies: Conc keep-alive
// clients, one request at a time, each body read whole by the origin
// (which answers 400 to a cut one).
func (b *bench) runPost(ctx context.Context, scenario string, size, count int) error {
	req, dialAddr := b.postRequest(postBody(size))
	nd := net.Dialer{Timeout: b.cfg.Timeout}
	newOp := b.keepAliveOp(func() (net.Conn, error) { return nd.Dial("tcp", dialAddr) }, req)
	r := b.newResult(scenario)
	var m *meter
	lr, err := b.loop(ctx, b.cfg.Conc, count, 2*b.cfg.Conc, b.cfg.PostTime, 0, newOp, func() (err error) {
		m, err = b.startMeter()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", scenario, err)
	}
	return b.finishLoop(r, m, lr, b.cfg.Conc, 0)
}

// HeldResult is the proxy's footprint while it holds uploads in flight:
// each client has sent a POST's head and all of its body but the last
// byte, so a proxy that inspects bodies before forwarding them holds each.
type HeldResult struct {
	Uploads      int     `json:"uploads"`
	BodyBytes    int     `json:"body_bytes"`
	RSS0KiB      int64   `json:"rss0_kib"`
	RSS1KiB      int64   `json:"rss1_kib"`
	KiBPerUpload float64 `json:"kib_per_upload"`
}

// runHeld opens HeldUploads uploads of size bytes through the proxy, sends
// all but the last byte of each, waits for the proxy to settle, and reads
// its RSS; then closes them all.
func (b *bench) runHeld(ctx context.Context, size int) error {
	if b.cfg.ProxyPID <= 0 {
		return fmt.Errorf("dlp_held: needs -proxy-pid")
	}
	req, dialAddr := b.postRequest(postBody(size))
	req = req[:len(req)-1]
	r := b.newResult("dlp_held")
	settle(ctx, b.cfg.Settle)
	p0, err := sampleProc(b.cfg.ProxyPID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	nd := net.Dialer{Timeout: b.cfg.Timeout}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range b.cfg.HeldUploads {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, err := nd.DialContext(ctx, "tcp", dialAddr)
		if err != nil {
			r.Errors++
			r.FirstError = err.Error()
			break
		}
		conns = append(conns, c)
		_ = c.SetWriteDeadline(time.Now().Add(b.cfg.Timeout))
		if _, err := c.Write(req); err != nil {
			r.Errors++
			r.FirstError = err.Error()
			break
		}
	}
	settle(ctx, b.cfg.Settle)
	p1, err := sampleProc(b.cfg.ProxyPID)
	if err != nil {
		return err
	}
	r.Time, r.Seconds, r.Ops = t0, time.Since(t0).Seconds(), int64(len(conns))
	h := &HeldResult{Uploads: len(conns), BodyBytes: size, RSS0KiB: p0.RSSKiB, RSS1KiB: p1.RSSKiB}
	if len(conns) > 0 {
		h.KiBPerUpload = float64(p1.RSSKiB-p0.RSSKiB) / float64(len(conns))
	}
	r.Held = h
	r.ProxyRSSKiB, r.ProxyFDs = p1.RSSKiB, p1.FDs
	return b.out(r)
}
