//go:build !linux

package egress

func newPipe(int) (*pipe, error) { return nil, errSpliceUnsupported }

func (p *pipe) close() {}
