package accesslog

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp"
	"github.com/egressd/egressd/proxy/sni"
)

// Contract keys of the access log line. Other tools parse these names.
const (
	KeyTS         = "ts"
	KeyID         = "id"    // the exchange's id: its open and close lines share it
	KeyEvent      = "event" // EventOpen or EventClose
	KeyListener   = "listener"
	KeyClient     = "client"
	KeyClientPort = "client_port"
	KeyUser       = "user"
	KeyGroup      = "group"
	KeyHost       = "host"
	KeyPort       = "port"
	KeySNI        = "sni"
	KeyECH        = "ech"
	KeyIP         = "ip"
	KeyEgressAddr = "egress_addr" // the local address egressd dialed from, IP:port
	KeyTLSVersion = "tls_version" // from the ClientHello of a tunnel to a TLS port
	KeyALPN       = "alpn"        // the protocols that ClientHello offered
	KeyDecision   = "decision"
	KeyRule       = "rule"
	KeyReason     = "reason"
	KeyStatus     = "status"
	KeyBytesUp    = "bytes_up"
	KeyBytesDown  = "bytes_down"
	KeyDurationMS = "duration_ms"
	KeyMethod     = "method"      // HTTP requests (forwarded, or inside an inspected tunnel)
	KeyPath       = "path"        // HTTP requests: the URL's path, without the query
	KeyUserAgent  = "user_agent"  // HTTP requests
	KeyDLPProfile = "dlp_profile" // plain HTTP requests a DLP profile inspected
	KeyDLP        = "dlp"         // their findings: [{"detector":..., "location":...}]
	KeyDLPICAP    = "dlp_icap"    // what the ICAP service said: allow, modify, block, error
	KeyVia        = "via"         // the parent proxy (upstream_proxies) that carried it
	KeyViaAddr    = "via_addr"    // the parent address (IP:port) egressd connected to
	KeyViaStatus  = "via_status"  // the parent's status when it refused
	KeyCache      = "cache"
	KeyOrigDst    = "orig_dst"  // in-line mode: the address and port the client dialed
	KeyInspected  = "inspected" // a request inside an inspected (terminated) tunnel
)

// Values of the event key: a tunnel's line when it is established
// (log.tunnel_open) and every exchange's line at its end.
const (
	EventOpen  = "open"
	EventClose = "close"
)

// Values of the cache key: how the HTTP cache answered a forwarded request
// (its X-Cache, in lower case).
const (
	CacheHit         = "hit"
	CacheMiss        = "miss"
	CacheRevalidated = "revalidated"
)

// Record is the state of one request or tunnel, written out once by Finish.
// Fields are set by the goroutine that owns the request; Up and Down are
// atomics because the relay's two goroutines count them while a tunnel
// runs. A Record is what happened, for the log line and the metrics: no
// code reads a field back to decide what to answer.
type Record struct {
	Start      time.Time
	ID         uint64 // set by NewRecord; logged as 16 hex digits
	Listener   policy.Listener
	Client     netip.Addr
	ClientPort uint16 // the client's source port (from the PROXY header behind a load balancer)
	User       string
	Method     string // HTTP requests only (forwarded, or inside an inspected tunnel), as are Path and UserAgent
	// Inspected marks a request inside an inspected tunnel. The tunnel
	// has a line of its own.
	Inspected bool
	Path      string // the request URL's path as sent (escaped), never its query
	UserAgent string
	Cache     string // plain HTTP through the HTTP cache only: CacheHit, CacheMiss or CacheRevalidated
	Host      string // normalized when a decision was made, raw otherwise
	Port      uint16
	SNI       string
	ECH       bool
	IP        netip.AddrPort // the address actually dialed: the parent's when Decision.Via is set
	OrigDst   netip.AddrPort // in-line mode: the destination the client dialed (the zero value elsewhere)
	// EgressAddr is the local address of the upstream connection: what the
	// origin, VPC flow logs and NAT logs see before any translation.
	EgressAddr netip.AddrPort
	// TLSVersion (sni.Info.Version) and ALPN are what the client's
	// ClientHello offered, on a tunnel whose hello the guard read.
	TLSVersion uint16
	ALPN       []string
	Decision   policy.Decision
	Reason     policy.Reason // overrides Decision.Reason when set (SNI, DLP, dial failures)
	// Status is the answer the client got: the HTTP status, or for SOCKS5
	// the reply code (RFC 1928), the RFC 1929 status of a failed password
	// (1) or the method selection 0xFF; 0 when it got none.
	Status int
	// ViaStatus is the parent proxy's status when it refused the request
	// (Decision.Via set); 0 otherwise.
	ViaStatus int
	Up        atomic.Int64 // client to origin
	Down      atomic.Int64 // origin to client

	// DLP: the profile that inspected the request ("" when none) and its
	// findings, as detector and location only (never the matched bytes).
	DLPProfile string
	DLPReport  bool
	Findings   []dlp.Finding
	DLPICAP    string // dlp.ICAPAllow, ...; "" when the ICAP service was not asked

	log    *Logger
	once   sync.Once
	opened bool // the tunnel was established (Opened): its duration is a tunnel's
	open   bool // the line being written is the open line
}

// verdict is the final verdict: a later SNI or DLP denial overrides the
// policy's first decision.
func (r *Record) Verdict() policy.Verdict { return r.Decision.Verdict }

// Deny marks the record denied with reason, after an allow by the policy
// (SNI mismatch, DLP, ...).
func (r *Record) Deny(reason policy.Reason) {
	r.Decision.Verdict = policy.Deny
	r.Reason = reason
}

// DialFailed records a failed dial: reason dial_error, or upstream_proxy
// when err came from a parent proxy (an error in its chain with a
// Parent() (netip.AddrPort, int) method, such as *upstream.Error), with
// the parent address that answered and its status.
func (r *Record) DialFailed(err error) {
	r.Reason = policy.ReasonDialError
	var pe parentError
	if errors.As(err, &pe) {
		r.Reason = policy.ReasonUpstreamProxy
		r.IP, r.ViaStatus = pe.Parent()
	}
}

type parentError interface {
	error
	Parent() (netip.AddrPort, int)
}

// FinalReason is the reason written to the log.
func (r *Record) FinalReason() policy.Reason {
	if r.Reason != "" {
		return r.Reason
	}
	return r.Decision.Reason
}

// MarshalLogObject writes the contract fields; it implements zapcore.ObjectMarshaler.
func (r *Record) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	// Addresses are formatted into a pooled buffer: a byte slice handed to
	// the encoder's interface escapes, so a stack array would be one heap
	// allocation per line. Encoders copy AddByteString's bytes.
	bp := addrBufs.Get().(*[64]byte)
	defer addrBufs.Put(bp)
	enc.AddByteString(KeyID, appendID(bp[:0], r.ID))
	if r.open {
		enc.AddString(KeyEvent, EventOpen)
	} else {
		enc.AddString(KeyEvent, EventClose)
	}
	enc.AddString(KeyListener, string(r.Listener))
	enc.AddByteString(KeyClient, appendAddr(bp[:0], r.Client))
	enc.AddUint16(KeyClientPort, r.ClientPort)
	enc.AddString(KeyUser, r.User)
	enc.AddString(KeyGroup, r.Decision.Group)
	if r.Inspected {
		enc.AddBool(KeyInspected, true)
	}
	if r.Method != "" {
		enc.AddString(KeyMethod, r.Method)
		enc.AddString(KeyPath, r.Path)
		enc.AddString(KeyUserAgent, r.UserAgent)
	}
	if r.Cache != "" {
		enc.AddString(KeyCache, r.Cache)
	}
	enc.AddString(KeyHost, r.Host)
	enc.AddUint16(KeyPort, r.Port)
	enc.AddString(KeySNI, r.SNI)
	if r.ECH {
		enc.AddBool(KeyECH, true)
	}
	if via := r.Decision.Via; via != "" {
		// egressd dialed the parent, not the destination: no ip.
		enc.AddString(KeyIP, "")
		enc.AddString(KeyVia, via)
		enc.AddByteString(KeyViaAddr, appendAddrPort(bp[:0], r.IP))
		if r.ViaStatus != 0 {
			enc.AddInt(KeyViaStatus, r.ViaStatus)
		}
	} else {
		enc.AddByteString(KeyIP, appendAddr(bp[:0], r.IP.Addr()))
	}
	if r.OrigDst.IsValid() {
		enc.AddByteString(KeyOrigDst, appendAddrPort(bp[:0], r.OrigDst))
	}
	enc.AddByteString(KeyEgressAddr, appendAddrPort(bp[:0], r.EgressAddr))
	if r.TLSVersion != 0 {
		enc.AddString(KeyTLSVersion, sni.VersionName(r.TLSVersion))
		// A pointer in the interface: converting the slice itself would
		// allocate its header on every line.
		enc.AddArray(KeyALPN, (*protocols)(&r.ALPN))
	}
	enc.AddString(KeyDecision, r.Verdict().String())
	enc.AddString(KeyRule, r.Decision.Rule)
	enc.AddString(KeyReason, string(r.FinalReason()))
	enc.AddInt(KeyStatus, r.Status)
	enc.AddInt64(KeyBytesUp, r.Up.Load())
	enc.AddInt64(KeyBytesDown, r.Down.Load())
	enc.AddInt64(KeyDurationMS, time.Since(r.Start).Milliseconds())
	if r.DLPProfile != "" {
		enc.AddString(KeyDLPProfile, r.DLPProfile)
		enc.AddArray(KeyDLP, findings(r.Findings))
		if r.DLPICAP != "" {
			enc.AddString(KeyDLPICAP, r.DLPICAP)
		}
	}
	return nil
}

// protocols writes ALPN protocol names as a JSON array.
type protocols []string

func (ps *protocols) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, p := range *ps {
		enc.AppendString(p)
	}
	return nil
}

type findings []dlp.Finding

func (fs findings) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, f := range fs {
		enc.AppendObject(finding(f))
	}
	return nil
}

type finding dlp.Finding

func (f finding) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("detector", f.Detector)
	enc.AddString("location", dlp.Finding(f).Location())
	return nil
}

var addrBufs = sync.Pool{New: func() any { return new([64]byte) }}

// fieldSlices lends the one-field slice each access line passes to zap: a
// variadic slice passed on through zap's Core interface escapes, so a
// literal would be a heap allocation per line. Cores copy the Field values
// they keep (zap's own encode at once; the test observer copies), so the
// slice can be reused as soon as Info returns.
var fieldSlices = sync.Pool{New: func() any { return new([1]zap.Field) }}

// appendAddr appends a's text form, nothing for the zero Addr.
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return b
	}
	return a.AppendTo(b)
}

// appendAddrPort appends ap as IP:port ([IPv6]:port), nothing for the zero
// AddrPort.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	if !ap.Addr().IsValid() {
		return b
	}
	return ap.AppendTo(b)
}

// appendID appends id as 16 lower-case hex digits.
func appendID(b []byte, id uint64) []byte {
	const hex = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hex[id>>uint(shift)&0xf])
	}
	return b
}

// Opened marks the record as an established tunnel: its end counts in
// egressd_tunnel_duration_seconds, and with log.tunnel_open a line with
// event "open" is written now. Call it once, from the goroutine that owns
// the record, before the relay starts (the relay's byte counters are the
// only fields that may change meanwhile).
func (r *Record) Opened() {
	r.opened = true
	if r.log != nil && r.log.z != nil && r.log.tunnelOpen.Load() {
		r.open = true
		r.log.write(r)
		r.open = false
	}
}

// Finish emits the access line and updates the metrics. Only the first call
// has an effect.
func (r *Record) Finish() {
	r.once.Do(func() {
		if r.log == nil {
			return
		}
		r.log.finish(r)
	})
}

// Logger writes access lines and owns the metrics updated with them.
// A nil *Logger discards everything.
type Logger struct {
	z   *zap.Logger // nil: access log off, metrics still updated
	m   *Metrics    // may be nil
	obs Observer    // may be nil

	tunnelOpen atomic.Bool   // log.tunnel_open
	ids        atomic.Uint64 // the last record id given out
}

// Observer is told of every finished record, after its line and its metrics
// (the admin status page's recent denials and top hosts are fed this way).
// Observe runs on the goroutine that ends the exchange, once per request or
// tunnel: it must be cheap, must not block, and must not keep r.
type Observer interface {
	Observe(r *Record)
}

// SetObserver makes the logger tell o of every finished record. Call it
// before the logger is used; it is not safe against concurrent Finish calls.
func (l *Logger) SetObserver(o Observer) { l.obs = o }

// NewLogger returns a Logger writing to z (nil disables the line) and
// updating m (nil disables metrics).
func NewLogger(z *zap.Logger, m *Metrics) *Logger {
	l := &Logger{z: z, m: m}
	// Ids count up from a random start, so two instances' lines (or one
	// instance's before and after a restart) are unlikely to share one.
	var seed [8]byte
	rand.Read(seed[:])
	l.ids.Store(binary.LittleEndian.Uint64(seed[:]))
	return l
}

// SetTunnelOpen turns the open line of tunnels (log.tunnel_open) on or off
// for tunnels established from now on. Safe for concurrent use.
func (l *Logger) SetTunnelOpen(on bool) { l.tunnelOpen.Store(on) }

// Metrics returns the metrics the logger updates (may be nil).
func (l *Logger) Metrics() *Metrics {
	if l == nil {
		return nil
	}
	return l.m
}

// NewRecord starts a record for one exchange.
func (l *Logger) NewRecord(listener policy.Listener, client netip.Addr) *Record {
	r := &Record{Start: time.Now(), Listener: listener, Client: client, log: l}
	if l != nil {
		r.ID = l.ids.Add(1)
	}
	return r
}

func (l *Logger) finish(r *Record) {
	if l.z != nil {
		l.write(r)
	}
	if l.m != nil {
		l.m.observe(r)
	}
	if l.obs != nil {
		l.obs.Observe(r)
	}
}

// write writes r's line.
func (l *Logger) write(r *Record) {
	fs := fieldSlices.Get().(*[1]zap.Field)
	fs[0] = zap.Inline(r)
	l.z.Info("access", fs[:]...)
	fs[0] = zap.Field{} // the pool must not keep the record alive
	fieldSlices.Put(fs)
}

type ctxKey struct{}

// WithRecord returns ctx carrying r.
func WithRecord(ctx context.Context, r *Record) context.Context {
	return context.WithValue(ctx, ctxKey{}, r)
}

// FromContext returns the record in ctx, or a detached no-op record so callers
// never check for nil.
func FromContext(ctx context.Context) *Record {
	if r, ok := ctx.Value(ctxKey{}).(*Record); ok {
		return r
	}
	return &Record{Start: time.Now()}
}
