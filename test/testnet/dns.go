package testnet

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// DNSServer is an in-process authoritative DNS server (UDP and TCP on the
// same port) with a zone its user sets. Unknown names answer NXDOMAIN; a
// known name answers its A or AAAA records, or NODATA for a family it has
// none of, or for other query types.
type DNSServer struct {
	udp, tcp *dns.Server
	addr     string
	wg       sync.WaitGroup

	mu      sync.Mutex
	zone    map[string]*dnsEntry
	domains map[string]*dnsEntry // SetDomain: answers for the name and every name under it
	queries map[string]map[uint16]int
}

type dnsEntry struct {
	ttl    uint32
	seq    [][]netip.Addr // successive answers, cycling; one step for a plain Set
	next   map[uint16]int // per query type: index of the next step
	cname  string         // non-empty: answer with this CNAME (and the target's records)
	rcode  int            // non-zero: answer with this rcode only
	silent bool           // never answer
	// failing limits rcode and silent to these query types; the others get
	// NODATA. Empty: every type.
	failing []uint16
}

// ListenDNS opens UDP and TCP on addr with listenPacket and listen (net's
// functions, or a network namespace's) and serves on them. With port 0 it
// looks for a port free for both, a few tries at most.
func ListenDNS(addr string,
	listenPacket func(network, addr string) (net.PacketConn, error),
	listen func(network, addr string) (net.Listener, error),
) (*DNSServer, error) {
	anyPort := strings.HasSuffix(addr, ":0")
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = listenPacket("udp", addr); err != nil {
			return nil, err
		}
		var ln net.Listener
		if ln, err = listen("tcp", pc.LocalAddr().String()); err == nil {
			return ServeDNS(pc, ln), nil
		}
		pc.Close()
		if !anyPort {
			break
		}
	}
	return nil, err
}

// ServeDNS serves on pc (UDP) and ln (TCP), which should have the same
// address, and returns once both serve. Close stops it.
func ServeDNS(pc net.PacketConn, ln net.Listener) *DNSServer {
	s := &DNSServer{zone: map[string]*dnsEntry{}, domains: map[string]*dnsEntry{}, queries: map[string]map[uint16]int{}}
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
	return s
}

// Close stops the server and waits for its goroutines.
func (s *DNSServer) Close() error {
	err := errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
	s.wg.Wait()
	return err
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

// SetDomain makes domain and every name under it answer addrs with ttl,
// except the names set one by one. No addresses means NODATA.
func (s *DNSServer) SetDomain(domain string, ttl uint32, addrs ...netip.Addr) {
	e := &dnsEntry{ttl: ttl, seq: [][]netip.Addr{addrs}, next: map[uint16]int{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.domains[dns.CanonicalName(domain)] = e
}

// SetCNAME makes name an alias of target with ttl. The answer carries the
// chain and target's records when target is in the zone.
func (s *DNSServer) SetCNAME(name string, ttl uint32, target string) {
	s.put(name, &dnsEntry{ttl: ttl, cname: dns.CanonicalName(target)})
}

// SetRcode makes name answer with rcode (dns.RcodeServerFailure, say) and
// no records. With qtypes, only queries of those types fail; the others
// get NODATA (an IPv4-only name whose A lookups fail, say).
func (s *DNSServer) SetRcode(name string, rcode int, qtypes ...uint16) {
	s.put(name, &dnsEntry{rcode: rcode, failing: qtypes})
}

// SetSilent makes the server never answer queries for name (timeouts).
// With qtypes, only queries of those types go unanswered; the others get
// NODATA.
func (s *DNSServer) SetSilent(name string, qtypes ...uint16) {
	s.put(name, &dnsEntry{silent: true, failing: qtypes})
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
		e, ok = s.inDomain(name)
	}
	if !ok {
		if depth == 0 {
			m.Rcode = dns.RcodeNameError
		}
		return false
	}
	fails := len(e.failing) == 0 || slices.Contains(e.failing, qtype)
	switch {
	case e.silent && fails:
		return true
	case e.rcode != 0 && fails:
		m.Rcode = e.rcode
		return false
	case e.silent || e.rcode != 0:
		return false // NODATA for the types that do not fail
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

// inDomain returns the entry of the closest SetDomain domain holding name.
// Called with s.mu held.
func (s *DNSServer) inDomain(name string) (*dnsEntry, bool) {
	if len(s.domains) == 0 {
		return nil, false
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if e, ok := s.domains[name[off:]]; ok {
			return e, true
		}
	}
	return nil, false
}

// dnsUDPSize is the largest UDP answer the client accepts.
func dnsUDPSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}
