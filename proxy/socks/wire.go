package socks

import (
	"bytes"
	"net"
	"net/netip"

	socks5 "github.com/armon/go-socks5"

	"github.com/egressd/egressd/proxy/rawio"
)

// SOCKS5 wire values (RFC 1928, RFC 1929). go-socks5 exports the methods
// and commands; the rest it keeps to itself.
const (
	socksVersion       = 5
	methodNoAuth       = socks5.NoAuth
	methodUserPass     = socks5.UserPassAuth
	methodNoAcceptable = 0xFF
	userPassVersion    = 0x01 // RFC 1929's version byte
	userPassOK         = 0x00 // RFC 1929 status: success
	userPassFailed     = 0x01 // any other status is a failure
	cmdConnect         = socks5.ConnectCommand
	cmdBind            = socks5.BindCommand
	cmdAssociate       = socks5.AssociateCommand
	atypIPv4           = 0x01
	atypDomain         = 0x03
	atypIPv6           = 0x04
)

// replyCode is an RFC 1928 section 6 reply code.
type replyCode byte

const (
	replySucceeded            replyCode = 0x00
	replyGeneralFailure       replyCode = 0x01
	replyNotAllowed           replyCode = 0x02
	replyNetworkUnreachable   replyCode = 0x03
	replyHostUnreachable      replyCode = 0x04
	replyConnectionRefused    replyCode = 0x05
	replyCommandNotSupported  replyCode = 0x07
	replyAddrTypeNotSupported replyCode = 0x08
)

// greetingVerdict says what chooseMethod made of a greeting.
type greetingVerdict int

const (
	greetingShort        greetingVerdict = iota // b is too short to tell
	greetingNotSOCKS5                           // another version: closed without a reply
	greetingNoAcceptable                        // no method the server accepts: 0xFF
	greetingMethod                              // a method was chosen
)

// chooseMethod reads the greeting at the start of b (version, method count,
// methods) and picks the method: username and password when users are
// configured (auth) and the client offers it, else no authentication when
// that is allowed and offered. RFC 1928 leaves the choice to the server;
// clients that have credentials offer "no authentication" first (curl: 0, 2;
// golang.org/x/net/proxy: 0, 2), and taking the client's order would serve
// them anonymously, without their user's groups. n is the greeting's length.
func chooseMethod(b []byte, auth, required bool) (n int, method byte, v greetingVerdict) {
	if len(b) >= 1 && b[0] != socksVersion {
		return 0, 0, greetingNotSOCKS5
	}
	if len(b) < 2 || len(b) < 2+int(b[1]) {
		return 0, 0, greetingShort
	}
	n = 2 + int(b[1])
	methods := b[2:n]
	switch {
	case auth && bytes.IndexByte(methods, methodUserPass) >= 0:
		return n, methodUserPass, greetingMethod
	case (!auth || !required) && bytes.IndexByte(methods, methodNoAuth) >= 0:
		return n, methodNoAuth, greetingMethod
	}
	return n, 0, greetingNoAcceptable
}

// parseUserPass parses RFC 1929 credentials at the start of b. n > 0: they
// are b[:n]. n == 0: b is too short to tell. n < 0: not version 1.
func parseUserPass(b []byte) (user, pass string, n int) {
	if len(b) >= 1 && b[0] != userPassVersion {
		return "", "", -1
	}
	if len(b) < 2 {
		return "", "", 0
	}
	u := 2 + int(b[1])
	if len(b) < u+1 {
		return "", "", 0
	}
	n = u + 1 + int(b[u])
	if len(b) < n {
		return "", "", 0
	}
	return string(b[2:u]), string(b[u+1 : n]), n
}

// request is a parsed SOCKS5 request.
type request struct {
	cmd  byte
	host string // a name as sent, or an IP literal in its canonical text form
	port uint16
}

// parseRequest's answers besides a request of n > 0 bytes.
const (
	requestShort       = 0  // b is too short to tell
	requestNotSOCKS5   = -1 // another version: closed without a reply
	requestBadAddrType = -2 // an unknown address type: reply 0x08
)

// parseRequest parses the version 5 request at the start of b, whatever its
// command. n > 0: the request is b[:n]; else one of the constants above.
// FuzzParseRequest holds it to go-socks5's NewRequest.
func parseRequest(b []byte) (req request, n int) {
	if len(b) >= 1 && b[0] != socksVersion {
		return req, requestNotSOCKS5
	}
	if len(b) < 4 {
		return req, requestShort
	}
	req.cmd = b[1]
	// b[2] is reserved; go-socks5 ignores it, and so does this.
	var addrEnd int
	switch b[3] {
	case atypIPv4:
		addrEnd = 4 + 4
	case atypIPv6:
		addrEnd = 4 + 16
	case atypDomain:
		if len(b) < 5 {
			return req, requestShort
		}
		addrEnd = 5 + int(b[4])
	default:
		return req, requestBadAddrType
	}
	n = addrEnd + 2
	if len(b) < n {
		return req, requestShort
	}
	switch b[3] {
	case atypIPv4:
		req.host = netip.AddrFrom4([4]byte(b[4:8])).String()
	case atypIPv6:
		req.host = netip.AddrFrom16([16]byte(b[4:20])).Unmap().String()
	default:
		req.host = string(b[5:addrEnd])
	}
	req.port = uint16(b[addrEnd])<<8 | uint16(b[addrEnd+1])
	return req, n
}

// writeReply writes an RFC 1928 reply: the bound address for success, else
// IPv4 0.0.0.0:0, as go-socks5 answers.
func writeReply(tc *net.TCPConn, code replyCode, bind *net.TCPAddr) error {
	var msg [4 + 16 + 2]byte
	msg[0], msg[1], msg[3] = socksVersion, byte(code), atypIPv4
	n := 4 + 4
	port := 0
	if bind != nil {
		port = bind.Port
		if ip4 := bind.IP.To4(); ip4 != nil {
			copy(msg[4:], ip4)
		} else {
			msg[3] = atypIPv6
			copy(msg[4:], bind.IP.To16())
			n = 4 + 16
		}
	}
	msg[n], msg[n+1] = byte(port>>8), byte(port)
	_, err := rawio.Write(tc, msg[:n+2])
	return err
}

// The two-byte messages: method selections (RFC 1928 section 3) and RFC
// 1929 statuses. Package variables, so writing one allocates nothing.
var (
	selectNoAuth     = []byte{socksVersion, methodNoAuth}
	selectUserPass   = []byte{socksVersion, methodUserPass}
	selectNone       = []byte{socksVersion, methodNoAcceptable}
	userPassAccepted = []byte{userPassVersion, userPassOK}
	userPassRefused  = []byte{userPassVersion, userPassFailed}
)
