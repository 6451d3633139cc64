//go:build !linux

package egress

// splice is Linux-only; elsewhere every tunnel takes the copy path.
func (d *direction) splice() error { return errSpliceUnsupported }

// waitReadable cannot wait without reading here: the copy path's read
// waits instead, holding its buffer.
func (d *direction) waitReadable() error { return nil }
