package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/egressd/egressd/test/testenv"
)

// statusPageConfig is egressd on loopback for the status page test: one
// rule the test's client uses, a deny rule, one that never matches, two
// groups, one of them in report mode.
// Everything the test asks for is on 127.0.0.1 or denied before a lookup.
func statusPageConfig(t *testing.T, dnsAddr string, originPort int) *testenv.Config {
	t.Helper()
	c := testenv.NewConfig(t)
	c.Listen = testenv.Listeners(t, nil, "127.0.0.1")
	c.DNS.Servers = []string{dnsAddr}
	c.Timeouts.Handshake = 3 * time.Second
	c.Policy.Mode = "enforce"
	c.Policy.DenyRanges = []string{"default"}
	c.Policy.Groups = map[string]testenv.Group{
		"builders": {CIDRs: []string{"127.0.0.0/8"}},
		"laptops":  {CIDRs: []string{"192.0.2.0/24"}, Mode: "report"},
	}
	c.Policy.Rules = []testenv.Rule{
		{Name: "no-paste", Action: "deny", Hosts: []string{"pastebin.test"}},
		{Name: "packages", Groups: []string{"builders"}, Hosts: []string{"pkg.example.test", "*.mirror.test"},
			Ports: []int{originPort}, AllowRanges: []string{"127.0.0.1/32"}},
		{Name: "legacy-ftp", Hosts: []string{"ftp.old.test"}, Ports: []int{21}},
	}
	return c
}

// TestStatusPage drives the status page in headless Chromium against the
// running egressd binary: the page loads with no console error; a denial
// made by a client appears with its reason, both server-rendered and after
// the page's refresh; the filter box filters; the policy tester answers for
// an allowed and a denied target; hostile host names from a CONNECT and a
// SOCKS5 request are shown as text and never run. STATUS_PAGE_SCREENSHOT=FILE
// writes the page's screenshot (docs/status-page.png comes from here).
func TestStatusPage(t *testing.T) {
	ca := testenv.NewCA(t)
	origin := testenv.TLSOrigin(t, ca, "127.0.0.1", "pkg.example.test", "eu.mirror.test")
	dns := testenv.NewDNSServer(t)
	for _, name := range []string{"pkg.example.test", "eu.mirror.test"} {
		dns.Set(name, 60, netip.MustParseAddr("127.0.0.1"))
	}
	cfg := statusPageConfig(t, dns.Addr(), origin.Port())
	cfg.Admin.UIHosts = []string{"status.egressd.test"}
	p := (&testenv.Egressd{}).StartConfig(t, cfg)

	// Traffic before the page loads: allowed requests, denials, and a
	// CONNECT whose host is markup.
	// Each request has its own tunnel (and its own access line).
	client := p.HTTPClient(t, ca.CertPool())
	client.Transport.(*http.Transport).DisableKeepAlives = true
	get := func(url string) int {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 3 {
		if code := get(fmt.Sprintf("https://pkg.example.test:%d/simple/", origin.Port())); code != 200 {
			t.Fatalf("allowed request: %d", code)
		}
	}
	if code := get(fmt.Sprintf("https://eu.mirror.test:%d/", origin.Port())); code != 200 {
		t.Fatalf("allowed request: %d", code)
	}
	for _, host := range []string{"pastebin.test", "pastebin.test", "telemetry.vendor.test"} {
		if _, err := client.Get("https://" + host + "/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Fatalf("CONNECT %s: %v, want 403", host, err)
		}
	}
	const connectHostile = `x<script>window.__pwned=1;</script>`
	c := p.Dial(t, p.HTTPAddr)
	fmt.Fprintf(c, "CONNECT %s:443 HTTP/1.1\r\nHost: x\r\n\r\n", connectHostile)
	if b, _ := io.ReadAll(c); !bytes.HasPrefix(b, []byte("HTTP/1.1 400")) {
		t.Fatalf("hostile CONNECT: %q", b)
	}
	hostileLine := p.WaitForLog(t, testenv.Field("reason", "bad_request"))
	shownConnectHost := hostileLine["host"].(string) // the part of it the parser kept
	if !strings.HasPrefix(shownConnectHost, "x<script>") {
		t.Fatalf("hostile CONNECT logged as %q", shownConnectHost)
	}
	p.WaitForLog(t, testenv.Fields(map[string]any{"host": "telemetry.vendor.test", "reason": "not_allowed"}))
	waitLines(t, p, 4, testenv.Fields(map[string]any{"decision": "allow", "rule": "packages"}))

	b := newBrowser(t)
	if err := chromedp.Do(b.ctx, chromedp.EmulateViewport(1400, 1220), chromedp.Navigate("http://"+p.AdminAddr+"/"),
		chromedp.WaitVisible(chromedp.ID("tester"))); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	if title := inBrowser(t, b, chromedp.Title()); title != "egressd status" {
		t.Errorf("title %q", title)
	}
	rows := inBrowser(t, b, denialRows())
	find := func(rows [][]string, host string) []string {
		for _, r := range rows {
			if r[5] == host {
				return r
			}
		}
		return nil
	}
	if r := find(rows, "telemetry.vendor.test"); r == nil || r[9] != "not_allowed" || r[8] != "deny" || r[2] != "127.0.0.1" || r[1] != "connect" {
		t.Errorf("server-rendered denial row: %q (rows %q)", r, rows)
	}
	if r := find(rows, shownConnectHost); r == nil || r[9] != "bad_request" {
		t.Errorf("hostile CONNECT row: %q (rows %q)", r, rows)
	}
	if tops := inBrowser(t, b, tableCells("#top-allowed")); len(tops) == 0 || tops[0][0] != "pkg.example.test" || tops[0][1] != "3" {
		t.Errorf("top allowed hosts: %q", tops)
	}
	if tops := inBrowser(t, b, tableCells("#top-denied")); len(tops) == 0 || tops[0][0] != "pastebin.test" || tops[0][1] != "2" {
		t.Errorf("top denied hosts: %q", tops)
	}
	wantRules := [][]string{{"no-paste", "deny", "2", ""}, {"packages", "allow", "4", ""}, {"legacy-ftp", "allow", "0", "never matched"}}
	if rules := inBrowser(t, b, tableCells("#rules")); fmt.Sprint(rules) != fmt.Sprint(wantRules) {
		t.Errorf("rules: %q, want %q", rules, wantRules)
	}
	wantGroups := [][]string{{"builders", "enforce (the policy's)"}, {"laptops", "report"}}
	if groups := inBrowser(t, b, tableCells("#groups")); fmt.Sprint(groups) != fmt.Sprint(wantGroups) {
		t.Errorf("groups: %q, want %q", groups, wantGroups)
	}
	if r := find(rows, "pastebin.test"); r == nil || r[9] != "denied_by_rule" || r[10] != "no-paste" {
		t.Errorf("deny rule row: %q", r)
	}

	// A denial after the page loaded: a SOCKS5 name with markup and spaces
	// (SOCKS5 carries any bytes), which the page's refresh renders.
	const socksHostile = `<img src=x onerror="window.__pwned=1">`
	s := p.Dial(t, p.SOCKSAddr)
	s.Write([]byte{5, 1, 0})
	greeting := make([]byte, 2)
	io.ReadFull(s, greeting)
	s.Write(append(append([]byte{5, 1, 0, 3, byte(len(socksHostile))}, socksHostile...), 1, 187))
	reply := make([]byte, 10)
	if _, err := io.ReadFull(s, reply); err != nil || reply[1] != 2 {
		t.Fatalf("hostile SOCKS5: reply %v %v, want 0x02", reply, err)
	}
	rows = waitRows(t, b, func(rows [][]string) bool { return find(rows, socksHostile) != nil })
	if r := find(rows, socksHostile); r[1] != "socks5" || r[9] != "not_allowed" || r[6] != "443" {
		t.Errorf("refreshed SOCKS5 denial row: %q", r)
	}
	if r := find(rows, shownConnectHost); r == nil || r[9] != "bad_request" {
		t.Errorf("hostile CONNECT row after refresh: %q", r)
	}
	// Markup from the wire stayed text: no element came of it, nothing ran.
	injected := inBrowser(t, b, chromedp.Evaluate[int](
		`document.querySelectorAll("main script, main img, #denials b").length + (window.__pwned === undefined ? 0 : 100)`))
	if injected != 0 {
		t.Errorf("wire text became markup or ran (%d)", injected)
	}

	// The filter box.
	if err := chromedp.Do(b.ctx, chromedp.SendKeys(chromedp.ID("filter"), "pastebin")); err != nil {
		t.Fatal(err)
	}
	visible := inBrowser(t, b, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#denials tbody tr")).filter(tr => !tr.hidden).map(tr => tr.cells[5].textContent)`))
	if len(visible) != 2 || visible[0] != "pastebin.test" || visible[1] != "pastebin.test" {
		t.Errorf("filtered rows: %q", visible)
	}
	if err := chromedp.Do(b.ctx, setValue("filter", "")); err != nil {
		t.Fatal(err)
	}
	if n := inBrowser(t, b, chromedp.Evaluate[int](`document.querySelectorAll("#denials tbody tr[hidden]").length`)); n != 0 {
		t.Errorf("%d rows hidden with the filter empty", n)
	}

	// The policy tester, for an allowed and two denied targets.
	tester := func(client, target string) map[string]string {
		t.Helper()
		if err := chromedp.Do(b.ctx,
			setValue("t-client", client),
			setValue("t-target", target),
			chromedp.Evaluate[chromedp.Void](`delete document.getElementById("t-result").dataset.decision`),
			chromedp.Click(chromedp.ID("t-submit")),
			chromedp.WaitVisible(chromedp.CSS("#t-result[data-decision]")),
		); err != nil {
			t.Fatalf("tester %s %s: %v", client, target, err)
		}
		return inBrowser(t, b, chromedp.Evaluate[map[string]string](
			`Object.fromEntries(["t-decision", "t-reason", "t-rule", "t-group", "t-host", "t-port", "t-addrs", "t-error"].map(id => [id, document.getElementById(id).textContent]))`))
	}
	allowed := tester("127.0.0.1", fmt.Sprintf("PKG.example.test:%d", origin.Port()))
	wantAllowed := map[string]string{"t-decision": "allow", "t-reason": "(allowed by a rule)", "t-rule": "packages", "t-group": "builders",
		"t-host": "pkg.example.test", "t-port": fmt.Sprint(origin.Port()), "t-addrs": fmt.Sprintf("127.0.0.1:%d", origin.Port()), "t-error": ""}
	if fmt.Sprint(allowed) != fmt.Sprint(wantAllowed) {
		t.Errorf("tester, allowed: %v\nwant %v", allowed, wantAllowed)
	}
	if denied := tester("127.0.0.1", "pastebin.test:443"); denied["t-decision"] != "deny" ||
		denied["t-reason"] != "denied_by_rule" || denied["t-rule"] != "no-paste" || denied["t-addrs"] != "-" {
		t.Errorf("tester, deny rule: %v", denied)
	}
	// A public address literal: decided, never dialed (the tester dials
	// nothing).
	if reported := tester("192.0.2.7", "93.184.216.34:443"); reported["t-decision"] != "report" ||
		reported["t-reason"] != "not_allowed" || reported["t-group"] != "laptops" || reported["t-addrs"] != "93.184.216.34:443" {
		t.Errorf("tester, group in report mode: %v", reported)
	}
	if denied := tester("127.0.0.1", fmt.Sprintf("pkg.example.test:%d", origin.Port()+1)); denied["t-decision"] != "deny" ||
		denied["t-reason"] != "port_not_allowed" {
		t.Errorf("tester, other port: %v", denied)
	}
	if denied := tester("", "169.254.169.254:80"); denied["t-decision"] != "deny" || denied["t-reason"] != "not_allowed" {
		t.Errorf("tester, metadata address: %v", denied)
	}
	// Up to here, no console message of level error or warning, no
	// exception, no CSP violation.
	for _, m := range b.messages() {
		if m.Type == chromedp.ConsoleError || m.IsException() || m.Type == chromedp.ConsoleWarning {
			t.Errorf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line)
		}
	}
	// A target that is not HOST:PORT gets the API's message; the browser
	// logs the 400 itself, and nothing else.
	before := len(b.messages())
	if bad := tester("", "no-port"); bad["t-decision"] != "error" || bad["t-error"] != `target "no-port" is not HOST:PORT` {
		t.Errorf("tester, bad target: %v", bad)
	}
	for _, m := range b.messages()[before:] {
		if m.Source != "network" || !strings.Contains(m.URL, "/api/check?target=no-port") {
			t.Errorf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line)
		}
	}
	// The tester asked the engine only: nothing was logged or counted for it.
	for _, l := range p.AccessLines() {
		if l["host"] == "169.254.169.254" {
			t.Errorf("the tester's check was logged as traffic: %v", l)
		}
	}

	if err := chromedp.Do(b.ctx, setValue("t-client", "127.0.0.1"),
		setValue("t-target", fmt.Sprintf("pkg.example.test:%d", origin.Port())),
		chromedp.Click(chromedp.ID("t-submit")), chromedp.WaitVisible(chromedp.CSS("#t-result[data-decision=allow]"))); err != nil {
		t.Fatal(err)
	}
	png := inBrowser(t, b, chromedp.CaptureScreenshot())
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if out := os.Getenv("STATUS_PAGE_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// DNS rebinding: a site that points its own name at the admin address
	// makes the browser send that name as Host, and its script reads the
	// answers as same-origin. egressd refuses that Host: the site's page
	// and its fetch of /api/denials get 403 and no client data. A name in
	// admin.ui_hosts gets the page.
	_, adminPort, err := net.SplitHostPort(p.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b.ctx, chromedp.Navigate("http://rebind.attacker.test:"+adminPort+"/")); err != nil {
		t.Fatalf("load the page by a rebound name: %v", err)
	}
	if text := inBrowser(t, b, chromedp.Evaluate[string](`document.body.innerText`)); !strings.Contains(text, "admin.ui_hosts") ||
		strings.Contains(text, "pastebin") || strings.Contains(text, "127.0.0.1") {
		t.Errorf("the page by a rebound name shows %q, want the 403 naming admin.ui_hosts and no client data", short(text))
	}
	stolen := inBrowser(t, b, chromedp.Evaluate[map[string]any](
		`fetch("/api/denials", {cache: "no-store"}).then(async r => ({status: r.status, body: await r.text()}))`, chromedp.EvalAwaitPromise))
	if stolen["status"] != float64(403) || strings.Contains(fmt.Sprint(stolen["body"]), "pastebin") {
		t.Errorf("the rebound site's fetch of /api/denials: %v, want 403 and no denials", stolen)
	}
	if err := chromedp.Do(b.ctx, chromedp.Navigate("http://status.egressd.test:"+adminPort+"/"),
		chromedp.WaitVisible(chromedp.ID("tester"))); err != nil {
		t.Fatalf("load the page by its name in admin.ui_hosts: %v", err)
	}
	if r := find(inBrowser(t, b, denialRows()), "pastebin.test"); r == nil {
		t.Errorf("the page by its name in admin.ui_hosts shows no pastebin.test denial")
	}

	// /api/check is rate-limited (it may ask the resolver): a script that
	// floods it gets 429 with Retry-After. Bounded: at most 10 rounds of 40
	// concurrent checks, far past 10 a second on any machine.
	limited := func() (int, string, string) {
		var wg sync.WaitGroup
		type answer struct {
			code        int
			retry, body string
		}
		answers := make(chan answer, 40)
		for range 40 {
			wg.Go(func() {
				resp, err := adminGet(p.AdminAddr, "/api/check?client=127.0.0.1&target=pastebin.test:443")
				if err != nil {
					t.Errorf("GET /api/check: %v", err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
			})
		}
		wg.Wait()
		close(answers)
		for a := range answers {
			if a.code != http.StatusOK {
				return a.code, a.retry, a.body
			}
		}
		return http.StatusOK, "", ""
	}
	code, retry, body := http.StatusOK, "", ""
	for round := 0; round < 10 && code == http.StatusOK; round++ {
		code, retry, body = limited()
	}
	if code != http.StatusTooManyRequests || retry == "" || !strings.Contains(body, "too many checks") {
		t.Errorf("flooding /api/check: %d Retry-After %q %q, want 429 with Retry-After", code, retry, body)
	}

	// admin.ui: false turns the page and its API off, on reload.
	cfg.Admin.UI = false
	if err := os.WriteFile(p.ConfigPath, []byte(testenv.YAML(t, cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); reloads(t, nil, p.AdminAddr, "success") < 1; <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("no reload counted:\n%s", p.Stderr())
		}
	}
	for _, path := range []string{"/", "/api/denials", "/api/check?target=pkg.example.test:443", "/assets/app.js"} {
		if code := adminCode(t, p, path); code != http.StatusNotFound {
			t.Errorf("admin.ui false: %s = %d", path, code)
		}
	}
	if code := adminCode(t, p, "/metrics"); code != http.StatusOK {
		t.Errorf("admin.ui false: /metrics = %d", code)
	}
}

// browser is headless Chromium with its console recorded.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func (b *browser) messages() []chromedp.ConsoleMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), b.msgs...)
}

// newBrowser starts Debian's chromium headless, with a fresh profile and
// none of its background connections (this network reaches nothing but
// loopback), and records its console until the test ends.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The names a test navigates to, all on loopback (a browser has no
		// other way to send a name of the test's choosing as Host).
		chromedp.Flag("host-resolver-rules", "MAP rebind.attacker.test 127.0.0.1, MAP status.egressd.test 127.0.0.1"),
		chromedp.NoInheritEnv, chromedp.Env("HOME="+t.TempDir()),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	b := &browser{ctx: ctx}
	// Start the browser, then subscribe before the first navigation.
	if err := chromedp.Do(ctx); err != nil {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	cctx, stopConsole := context.WithCancel(ctx)
	msgs := chromedp.Console(cctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.msgs = append(b.msgs, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stopConsole()
		<-done
		cancelTimeout()
		cancelCtx() // closes the browser and waits for it
		cancelAlloc()
		if t.Failed() {
			for _, m := range b.messages() {
				t.Logf("console: %s", m)
			}
		}
	})
	return b
}

// inBrowser runs one action in the browser and fails the test on error.
func inBrowser[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return v
}

// setValue sets the value of the input with id as typing would, with an
// input event.
func setValue(id, value string) chromedp.Action[chromedp.Void] {
	js, _ := json.Marshal(value)
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const e = document.getElementById(%q); e.value = %s; e.dispatchEvent(new Event("input")); })()`, id, js))
}

// tableCells returns the text of each body cell of the table sel.
func tableCells(sel string) chromedp.Action[[][]string] {
	return chromedp.Evaluate[[][]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q + " tbody tr")).map(tr => Array.from(tr.cells).map(td => td.textContent))`, sel))
}

// denialRows returns the recent-denials table as text: time, listener,
// client, user, group, host, port, SNI, decision, reason, rule.
func denialRows() chromedp.Action[[][]string] { return tableCells("#denials") }

// waitRows reads the denials table until ok accepts it. The page refreshes
// it every 5 s; the wait gives it a few refreshes.
func waitRows(t *testing.T, b *browser, ok func([][]string) bool) [][]string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rows := inBrowser(t, b, denialRows())
		if ok(rows) {
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("the denials table never showed what was expected: %q", rows)
		}
		<-tick.C
	}
}

// waitLines waits until n access lines match pred (tunnels are logged when
// they close, after the client has its answer).
func waitLines(t *testing.T, p *testenv.Proc, n int, pred func(map[string]any) bool) {
	t.Helper()
	seen := 0 // WaitForLog shows each line to the predicate once, in order
	p.WaitForLog(t, func(l map[string]any) bool {
		if pred(l) {
			seen++
		}
		return seen >= n
	})
}

// short keeps a body's start for a failure message.
func short(s string) string { return s[:min(len(s), 200)] }

// adminCode is the status of a GET of path on the admin listener.
func adminCode(t *testing.T, p *testenv.Proc, path string) int {
	t.Helper()
	resp, err := adminGet(p.AdminAddr, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}
