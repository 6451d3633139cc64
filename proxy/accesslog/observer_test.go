package accesslog

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressd/egressd/policy"
)

// seen records what an Observer was told, and the counter of the record's
// decision at that moment.
type seen struct {
	m       *Metrics
	records []*Record
	counted float64
}

func (s *seen) Observe(r *Record) {
	s.records = append(s.records, r)
	s.counted = testutil.ToFloat64(s.m.Requests.WithLabelValues(string(r.Listener), r.Verdict().String(), string(r.FinalReason())))
}

// The observer is told of each finished record once, after its metrics,
// with the final verdict and reason (a denial after the policy's allow).
func TestObserverSeesEachFinish(t *testing.T) {
	var out bytes.Buffer
	l, ws := newTestLogger(&out)
	obs := &seen{m: l.Metrics()}
	l.SetObserver(obs)
	r := finishedRecord(l)
	r.Deny(policy.ReasonSNIMismatch)
	r.Finish()
	r.Finish()
	if len(obs.records) != 1 || obs.records[0] != r {
		t.Fatalf("observer told %d times", len(obs.records))
	}
	if r.Verdict() != policy.Deny || r.FinalReason() != policy.ReasonSNIMismatch {
		t.Errorf("final verdict %v %q", r.Verdict(), r.FinalReason())
	}
	if obs.counted != 1 {
		t.Errorf("egressd_requests_total at Observe: %v, want 1 (metrics first)", obs.counted)
	}
	if err := ws.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 1 || !strings.Contains(out.String(), `"reason":"sni_mismatch"`) {
		t.Errorf("%d access lines: %s", n, out.String())
	}
}
