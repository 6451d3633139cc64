package rollout

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/accesslog"
)

// genStart is the first timestamp of generated logs.
var genStart = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// genClock is a zap clock that advances a fixed step per line.
type genClock struct {
	now  time.Time
	step time.Duration
}

func (c *genClock) Now() time.Time {
	c.now = c.now.Add(c.step)
	return c.now
}

func (c *genClock) NewTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }

// accessWriter writes access lines exactly as egressd does: the encoder of
// cmd/egressd's newAccessLogger, accesslog.Record's fields.
type accessWriter struct {
	log   *accesslog.Logger
	clock *genClock
}

func newAccessWriter(w io.Writer, step time.Duration) *accessWriter {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "ts",
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.MillisDurationEncoder,
		LineEnding:     zapcore.DefaultLineEnding,
	})
	clock := &genClock{now: genStart, step: step}
	z := zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.InfoLevel), zap.WithClock(clock))
	return &accessWriter{log: accesslog.NewLogger(z, nil), clock: clock}
}

// genReq is one request of a generated log.
type genReq struct {
	listener policy.Listener
	client   string
	user     string
	group    string
	host     string
	port     uint16
	ip       string // dialed address, "" when nothing was dialed
	verdict  policy.Verdict
	reason   policy.Reason
	rule     string
}

func (w *accessWriter) write(r genReq) {
	rec := w.log.NewRecord(r.listener, netip.MustParseAddr(r.client))
	rec.User, rec.Host, rec.Port = r.user, r.host, r.port
	if r.ip != "" {
		rec.IP = netip.AddrPortFrom(netip.MustParseAddr(r.ip), r.port)
	}
	rec.Decision = policy.Decision{Verdict: r.verdict, Reason: r.reason, Rule: r.rule, Group: r.group, Host: r.host, Port: r.port}
	rec.Status = 200
	if r.verdict == policy.Deny {
		rec.Status = 403
	}
	rec.Finish()
}

// Clients of the generated farm: web and batch by address, ops by user.
const (
	genWeb   = "10.0.1.7"
	genWeb2  = "10.0.1.8"
	genBatch = "10.0.2.9"
	genOps   = "10.9.9.9" // in no cidr group; user alice puts it in ops
	genData  = "10.0.4.2" // group data, already enforced
)

// genConfig is the current config of the generated farm (report mode).
const genConfig = `# The farm's config while it runs in report mode.
listen:
  http: "0.0.0.0:3128"     # all interfaces
  socks5: ""
  admin: "127.0.0.1:9090"
dns:
  servers: ["10.0.0.2:53"]
policy:
  mode: report
  deny_ranges: [default]
  groups:
    web: { cidrs: ["10.0.1.0/24"] }
    batch: { cidrs: ["10.0.2.0/24"] }
    ops: { users: [alice] }
    data: { cidrs: ["10.0.4.0/24"], mode: enforce }
  rules:
    # Never, whatever a later rule says.
    - name: no-paste
      action: deny
      hosts: ["paste.example", "*.paste.example"]
    - name: github
      groups: [web]
      hosts: ["github.com", "*.github.com"]
      ports: [443]
    - name: internal-git
      groups: [ops]
      hosts: ["git.corp.example"]
      allow_ranges: ["10.50.0.0/16"]
      ports: [22, 443]
    - name: legacy-ftp
      hosts: ["ftp.example.org"]
      ports: [21]
    - name: never-denied
      action: deny
      hosts: ["*.unused.example"]
limits:
  max_connections: 5000
`

// genFarmLog writes realistic traffic of the farm of genConfig, as egressd
// would log it under that config: several groups, CDN-style names, IP
// literals, denied entries and report lines, in a deterministic order.
func genFarmLog(w io.Writer) {
	aw := newAccessWriter(w, 7*time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	var reqs []genReq
	add := func(n int, r genReq) {
		for range n {
			reqs = append(reqs, r)
		}
	}
	allow := func(n int, client, group, host string, port uint16, ip, rule string) {
		add(n, genReq{listener: policy.ListenerConnect, client: client, group: group, host: host, port: port, ip: ip, verdict: policy.Allow, rule: rule})
	}
	report := func(n int, listener policy.Listener, client, group, host string, port uint16, ip string, reason policy.Reason) {
		add(n, genReq{listener: listener, client: client, group: group, host: host, port: port, ip: ip, verdict: policy.Report, reason: reason})
	}
	deny := func(n int, listener policy.Listener, client, group, host string, port uint16, reason policy.Reason, rule string) {
		add(n, genReq{listener: listener, client: client, group: group, host: host, port: port, verdict: policy.Deny, reason: reason, rule: rule})
	}
	// web: GitHub through its rule, a CDN, npm, GitHub Pages of three
	// owners (a private public suffix), S3 buckets and AWS APIs.
	allow(40, genWeb, "web", "github.com", 443, "140.82.121.4", "github")
	allow(25, genWeb2, "web", "api.github.com", 443, "140.82.121.6", "github")
	allow(9, genWeb, "web", "codeload.github.com", 443, "140.82.121.9", "github")
	report(3, policy.ListenerConnect, genWeb, "web", "objects.githubusercontent.com", 443, "185.199.108.133", policy.ReasonNotAllowed)
	for i, h := range []string{"a1.cdn.shop.example.com", "b7.cdn.shop.example.com", "c3.cdn.shop.example.com", "d9.cdn.shop.example.com"} {
		report(5+i, policy.ListenerConnect, genWeb, "web", h, 443, "93.184.215.1"+fmt.Sprint(i), policy.ReasonNotAllowed)
	}
	report(12, policy.ListenerConnect, genWeb, "web", "www.shop.example.com", 443, "93.184.215.20", policy.ReasonNotAllowed)
	report(7, policy.ListenerConnect, genWeb, "web", "shop.example.com", 443, "93.184.215.21", policy.ReasonNotAllowed)
	for _, h := range []string{"d1a2b3c4.cloudfront.net", "e5f6a7b8.cloudfront.net", "f9e8d7c6.cloudfront.net"} {
		report(4, policy.ListenerConnect, genWeb, "web", h, 443, "13.32.0.1", policy.ReasonNotAllowed)
	}
	for _, h := range []string{"alice.github.io", "bob.github.io", "carol.github.io"} {
		report(2, policy.ListenerConnect, genWeb2, "web", h, 443, "185.199.108.153", policy.ReasonNotAllowed)
	}
	report(30, policy.ListenerConnect, genWeb, "web", "registry.npmjs.org", 443, "104.16.0.35", policy.ReasonNotAllowed)
	report(2, policy.ListenerHTTP, genWeb, "web", "registry.npmjs.org", 80, "104.16.0.35", policy.ReasonNotAllowed)
	report(1, policy.ListenerConnect, genWeb, "web", "github.com", 22, "140.82.121.4", policy.ReasonPortNotAllowed)
	for _, h := range []string{"sts.amazonaws.com", "ec2.amazonaws.com", "iam.amazonaws.com"} {
		report(6, policy.ListenerConnect, genWeb, "web", h, 443, "52.94.0.1", policy.ReasonNotAllowed)
	}
	report(3, policy.ListenerConnect, genWeb, "web", "build-cache.s3.amazonaws.com", 443, "52.216.0.1", policy.ReasonNotAllowed)
	report(2, policy.ListenerSOCKS5, genWeb, "web", "93.184.216.34", 8443, "93.184.216.34", policy.ReasonNotAllowed)
	report(1, policy.ListenerConnect, genWeb, "web", "2606:4700:4700::1111", 443, "2606:4700:4700::1111", policy.ReasonNotAllowed)
	report(2, policy.ListenerConnect, genWeb, "web", "xn--bcher-kva.example", 443, "93.184.215.30", policy.ReasonNotAllowed)
	// batch: Python packages, Debian mirrors on port 80, three .co.uk
	// sites (each its own registrant) and a bank.
	report(50, policy.ListenerConnect, genBatch, "batch", "pypi.org", 443, "151.101.0.223", policy.ReasonNotAllowed)
	report(45, policy.ListenerConnect, genBatch, "batch", "files.pythonhosted.org", 443, "151.101.64.223", policy.ReasonNotAllowed)
	for _, h := range []string{"deb.debian.org", "security.debian.org", "ftp.debian.org"} {
		report(8, policy.ListenerHTTP, genBatch, "batch", h, 80, "151.101.2.132", policy.ReasonNotAllowed)
	}
	for _, h := range []string{"weather.co.uk", "news.co.uk", "shop.co.uk"} {
		report(2, policy.ListenerConnect, genBatch, "batch", h, 443, "81.2.69.1", policy.ReasonNotAllowed)
	}
	report(4, policy.ListenerConnect, genBatch, "batch", "api.a.b.example.co.uk", 443, "81.2.69.2", policy.ReasonNotAllowed)
	report(1, policy.ListenerConnect, genBatch, "batch", "once.example.net", 443, "93.184.215.40", policy.ReasonNotAllowed)
	// ops: user alice from an address in no group, to the internal git
	// server that resolves into a denied range its rule carves out.
	add(15, genReq{listener: policy.ListenerSOCKS5, client: genOps, user: "alice", group: "ops", host: "git.corp.example", port: 22,
		ip: "10.50.1.1", verdict: policy.Allow, rule: "internal-git"})
	add(3, genReq{listener: policy.ListenerConnect, client: genOps, user: "alice", group: "ops", host: "status.corp.example", port: 443,
		ip: "93.184.215.50", verdict: policy.Report, reason: policy.ReasonNotAllowed})
	// A client in no group of the config.
	report(2, policy.ListenerConnect, "10.0.9.9", "", "stray.example.com", 443, "93.184.215.70", policy.ReasonNotAllowed)
	// Findings: never proposed.
	deny(4, policy.ListenerHTTP, genWeb, "web", "169.254.169.254", 80, policy.ReasonPrivateRange, "")
	deny(2, policy.ListenerConnect, genBatch, "batch", "metadata.internal.example", 80, policy.ReasonPrivateRange, "")
	deny(3, policy.ListenerConnect, genBatch, "batch", "paste.example", 443, policy.ReasonDeniedByRule, "no-paste")
	deny(2, policy.ListenerConnect, genWeb, "web", "api.github.com", 443, policy.ReasonSNIMismatch, "github")
	report(2, policy.ListenerConnect, genBatch, "batch", "cdn.evil.example", 443, "93.184.215.60", policy.ReasonSNIMissing)
	deny(1, policy.ListenerConnect, genBatch, "batch", "nx.example.org", 443, policy.ReasonDNSError, "")
	for i := range 14 {
		deny(1, policy.ListenerConnect, genData, "data", fmt.Sprintf("x%02d.tunnel.exfil.example", i), 53, policy.ReasonNotAllowed, "")
	}
	rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	for _, r := range reqs {
		aw.write(r)
	}
}

// genFarmBytes returns genFarmLog's output.
func genFarmBytes() []byte {
	var b bytes.Buffer
	genFarmLog(&b)
	return b.Bytes()
}
