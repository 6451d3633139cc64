package origdst

import "errors"

// ErrUnsupported is returned on systems other than Linux, which have
// neither nftables' redirect nor tproxy.
var ErrUnsupported = errors.New("origdst: transparent redirection needs Linux (nftables redirect or tproxy)")
