package accesslog

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy/dlp"
)

// Contract keys of the access log line. Other tools parse these names.
const (
	KeyTS         = "ts"
	KeyListener   = "listener"
	KeyClient     = "client"
	KeyUser       = "user"
	KeyGroup      = "group"
	KeyHost       = "host"
	KeyPort       = "port"
	KeySNI        = "sni"
	KeyECH        = "ech"
	KeyIP         = "ip"
	KeyDecision   = "decision"
	KeyRule       = "rule"
	KeyReason     = "reason"
	KeyStatus     = "status"
	KeyBytesUp    = "bytes_up"
	KeyBytesDown  = "bytes_down"
	KeyDurationMS = "duration_ms"
	KeyMethod     = "method"
	KeyDLPProfile = "dlp_profile" // plain HTTP requests a DLP profile inspected
	KeyDLP        = "dlp"         // their findings: [{"detector":..., "location":...}]
	KeyDLPICAP    = "dlp_icap"    // what the ICAP service said: allow, modify, block, error
	KeyCache      = "cache"
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
	Start    time.Time
	Listener policy.Listener
	Client   netip.Addr
	User     string
	Method   string // plain HTTP only
	Cache    string // plain HTTP through the HTTP cache only: CacheHit, CacheMiss or CacheRevalidated
	Host     string // normalized when a decision was made, raw otherwise
	Port     uint16
	SNI      string
	ECH      bool
	IP       netip.AddrPort // the address actually dialed
	Decision policy.Decision
	Reason   policy.Reason // overrides Decision.Reason when set (SNI, DLP, dial failures)
	// Status is the answer the client got: the HTTP status, or for SOCKS5
	// the reply code (RFC 1928), the RFC 1929 status of a failed password
	// (1) or the method selection 0xFF; 0 when it got none.
	Status int
	Up     atomic.Int64 // client to origin
	Down   atomic.Int64 // origin to client

	// DLP: the profile that inspected the request ("" when none) and its
	// findings, as detector and location only (never the matched bytes).
	DLPProfile string
	DLPReport  bool
	Findings   []dlp.Finding
	DLPICAP    string // dlp.ICAPAllow, ...; "" when the ICAP service was not asked

	log  *Logger
	once sync.Once
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
	enc.AddString(KeyListener, string(r.Listener))
	enc.AddByteString(KeyClient, appendAddr(bp[:0], r.Client))
	enc.AddString(KeyUser, r.User)
	enc.AddString(KeyGroup, r.Decision.Group)
	if r.Method != "" {
		enc.AddString(KeyMethod, r.Method)
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
	enc.AddByteString(KeyIP, appendAddr(bp[:0], r.IP.Addr()))
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
func NewLogger(z *zap.Logger, m *Metrics) *Logger { return &Logger{z: z, m: m} }

// Metrics returns the metrics the logger updates (may be nil).
func (l *Logger) Metrics() *Metrics {
	if l == nil {
		return nil
	}
	return l.m
}

// NewRecord starts a record for one exchange.
func (l *Logger) NewRecord(listener policy.Listener, client netip.Addr) *Record {
	return &Record{Start: time.Now(), Listener: listener, Client: client, log: l}
}

func (l *Logger) finish(r *Record) {
	if l.z != nil {
		fs := fieldSlices.Get().(*[1]zap.Field)
		fs[0] = zap.Inline(r)
		l.z.Info("access", fs[:]...)
		fs[0] = zap.Field{} // the pool must not keep the record alive
		fieldSlices.Put(fs)
	}
	if l.m != nil {
		l.m.observe(r)
	}
	if l.obs != nil {
		l.obs.Observe(r)
	}
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
