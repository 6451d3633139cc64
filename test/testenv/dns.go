package testenv

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNSServer is an in-process authoritative DNS server (UDP and TCP on the
// same port) with a zone the test sets. Unknown names answer NXDOMAIN; a
// known name answers its A or AAAA records, or NODATA for a family it has
// none of, or for other query types.
type DNSServer struct {
	udp, tcp *dns.Server
	addr     string

	mu      sync.Mutex
	zone    map[string]*dnsEntry
	queries map[string]map[uint16]int
	wg      sync.WaitGroup
}

type dnsEntry struct {
	ttl    uint32
	seq    [][]netip.Addr // successive answers, cycling; one step for a plain Set
	next   map[uint16]int // per query type: index of the next step
	cname  string         // non-empty: answer with this CNAME (and the target's records)
	rcode  int            // non-zero: answer with this rcode only
	silent bool           // never answer
}

// NewDNSServer starts a server on 127.0.0.1:0 in the host namespace.
func NewDNSServer(t testing.TB) *DNSServer {
	t.Helper()
	return NewDNSServerIn(t, nil, "127.0.0.1")
}

// NewDNSServerIn starts a server on ip:0 (UDP and TCP, same port) inside
// ns (nil: the host namespace). It stops on cleanup.
func NewDNSServerIn(t testing.TB, ns *Netns, ip string) *DNSServer {
	t.Helper()
	// Find a port free for both UDP and TCP; a few tries at most.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 10 {
		pc, err = ns.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("dns listen udp: %v", err)
		}
		ln, err = ns.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("dns listen tcp: %v", err)
	}
	return startDNS(t, pc, ln)
}

// StartDNSServerAt starts a server on addr ("ip:port", UDP and TCP) inside
// ns (nil: the host namespace), for resolvers that take no port, such as
// resolv.conf's (port 53, inside a namespace of the test's own). It
// returns an error when the address is taken; the server stops on cleanup.
func StartDNSServerAt(t testing.TB, ns *Netns, addr string) (*DNSServer, error) {
	t.Helper()
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return startDNS(t, pc, ln), nil
}

func startDNS(t testing.TB, pc net.PacketConn, ln net.Listener) *DNSServer {
	s := &DNSServer{zone: map[string]*dnsEntry{}, queries: map[string]map[uint16]int{}}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		s.udp.Shutdown()
		s.tcp.Shutdown()
		s.wg.Wait()
	})
	return s
}

// Addr returns the server's "ip:port" (UDP and TCP), for dns.servers.
func (s *DNSServer) Addr() string { return s.addr }

// Set makes name answer addrs (A for IPv4, AAAA for IPv6) with ttl. No
// addresses means NODATA. It replaces any earlier setting for name.
func (s *DNSServer) Set(name string, ttl uint32, addrs ...netip.Addr) {
	s.SetSequence(name, ttl, [][]netip.Addr{addrs})
}

// SetSequence makes successive queries for name get successive answers,
// cycling through seq. The position advances separately per query type, so
// a resolver asking A and AAAA for each lookup sees step 0, 1, 2, ... in
// each family (for DNS rebinding tests, with ttl 0).
func (s *DNSServer) SetSequence(name string, ttl uint32, seq [][]netip.Addr) {
	if len(seq) == 0 {
		seq = [][]netip.Addr{nil}
	}
	s.put(name, &dnsEntry{ttl: ttl, seq: seq})
}

// SetCNAME makes name an alias of target with ttl. The answer carries the
// chain and target's records when target is in the zone.
func (s *DNSServer) SetCNAME(name string, ttl uint32, target string) {
	s.put(name, &dnsEntry{ttl: ttl, cname: dns.CanonicalName(target)})
}

// SetRcode makes name answer with rcode (dns.RcodeServerFailure, say) and
// no records.
func (s *DNSServer) SetRcode(name string, rcode int) {
	s.put(name, &dnsEntry{rcode: rcode})
}

// SetSilent makes the server never answer queries for name (timeouts).
func (s *DNSServer) SetSilent(name string) {
	s.put(name, &dnsEntry{silent: true})
}

// Delete removes name: it answers NXDOMAIN again.
func (s *DNSServer) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.zone, dns.CanonicalName(name))
}

func (s *DNSServer) put(name string, e *dnsEntry) {
	e.next = map[uint16]int{}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zone[dns.CanonicalName(name)] = e
}

// Queries returns how many queries (of any type, over UDP and TCP) the
// server received for name. A lookup through egressd's resolver asks A and
// AAAA, so it counts as two.
func (s *DNSServer) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queries[dns.CanonicalName(name)] {
		n += c
	}
	return n
}

// TotalQueries returns how many queries the server received, for any name.
func (s *DNSServer) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, byType := range s.queries {
		for _, c := range byType {
			n += c
		}
	}
	return n
}

// QueriesOfType returns how many queries of qtype (dns.TypeA, say) the
// server received for name.
func (s *DNSServer) QueriesOfType(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[dns.CanonicalName(name)][qtype]
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true

	s.mu.Lock()
	if s.queries[name] == nil {
		s.queries[name] = map[uint16]int{}
	}
	s.queries[name][q.Qtype]++
	silent := s.answer(m, name, q.Qtype, 0)
	s.mu.Unlock()
	if silent {
		return
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(dnsUDPSize(req))
	}
	w.WriteMsg(m)
}

// answer fills m for name; it follows CNAMEs within the zone. It reports
// whether the server must stay silent. Called with s.mu held.
func (s *DNSServer) answer(m *dns.Msg, name string, qtype uint16, depth int) (silent bool) {
	e, ok := s.zone[name]
	if !ok {
		if depth == 0 {
			m.Rcode = dns.RcodeNameError
		}
		return false
	}
	switch {
	case e.silent:
		return true
	case e.rcode != 0:
		m.Rcode = e.rcode
		return false
	case e.cname != "":
		m.Answer = append(m.Answer, &dns.CNAME{
			Hdr:    dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: e.ttl},
			Target: e.cname,
		})
		if qtype == dns.TypeCNAME || depth >= 8 {
			return false
		}
		return s.answer(m, e.cname, qtype, depth+1)
	}
	if qtype != dns.TypeA && qtype != dns.TypeAAAA {
		return false
	}
	step := e.seq[e.next[qtype]%len(e.seq)]
	e.next[qtype]++
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: e.ttl, Rrtype: qtype}
	for _, a := range step {
		switch {
		case qtype == dns.TypeA && a.Is4():
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
		case qtype == dns.TypeAAAA && !a.Is4():
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
		}
	}
	return false
}

// dnsUDPSize is the largest UDP answer the client accepts.
func dnsUDPSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}
