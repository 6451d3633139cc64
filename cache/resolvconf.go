package cache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultResolvConf is the system resolver configuration read when no
// servers are configured.
const DefaultResolvConf = "/etc/resolv.conf"

// glibc's limits and defaults (resolv.h: MAXNS, RES_TIMEOUT, RES_DFLRETRY,
// RES_MAXRETRANS, RES_MAXRETRY), which resolv.conf readers share.
const (
	resolvMaxServers  = 3
	resolvMaxTimeout  = 30 * time.Second
	resolvDefAttempts = 2
	resolvMaxAttempts = 5
)

// ResolvConf is what egressd takes from a resolv.conf(5) file: the name
// servers and the options that say how to ask them. search, domain, ndots
// and every other option are ignored: egressd resolves names as absolute.
type ResolvConf struct {
	// Servers are "ip:53" addresses in file order, at most three (glibc's
	// MAXNS). A file with no usable nameserver line gives 127.0.0.1:53,
	// as glibc does.
	Servers []string
	// Timeout is options timeout:N (capped at 30s), or zero when the file
	// does not set it.
	Timeout time.Duration
	// Attempts is options attempts:N (1..5); 2, glibc's default, when the
	// file does not set it.
	Attempts int
	// Rotate is options rotate: spread queries over the servers instead of
	// always asking the first one first.
	Rotate bool
}

// errNoNameserver is returned by ParseResolvConf when the file has
// nameserver lines but none of them holds an IP address.
var errNoNameserver = errors.New("no nameserver line holds an IP address")

// ParseResolvConf reads a resolv.conf(5) file. It is lenient as glibc is
// (unknown keywords and options, and malformed values, are skipped) except
// in one case: a file whose nameserver lines all fail to parse is an error,
// so that a half-written or broken file does not replace a working one.
func ParseResolvConf(data []byte) (ResolvConf, error) {
	rc := ResolvConf{Attempts: resolvDefAttempts}
	sawNameserver := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			sawNameserver = true
			if len(f) < 2 || len(rc.Servers) >= resolvMaxServers {
				continue
			}
			ip, err := netip.ParseAddr(f[1])
			if err != nil {
				continue
			}
			rc.Servers = append(rc.Servers, net.JoinHostPort(ip.Unmap().String(), "53"))
		case "options":
			for _, opt := range f[1:] {
				name, val, _ := strings.Cut(opt, ":")
				switch name {
				case "timeout":
					if n, err := strconv.Atoi(val); err == nil && n >= 1 {
						rc.Timeout = min(time.Duration(n)*time.Second, resolvMaxTimeout)
					}
				case "attempts":
					if n, err := strconv.Atoi(val); err == nil && n >= 1 {
						rc.Attempts = min(n, resolvMaxAttempts)
					}
				case "rotate":
					rc.Rotate = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return ResolvConf{}, err
	}
	if len(rc.Servers) == 0 {
		if sawNameserver {
			return ResolvConf{}, errNoNameserver
		}
		rc.Servers = []string{"127.0.0.1:53"}
	}
	return rc, nil
}

// ReadResolvConf reads and parses the file at path.
func ReadResolvConf(path string) (ResolvConf, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ResolvConf{}, err
	}
	rc, err := ParseResolvConf(data)
	if err != nil {
		return ResolvConf{}, fmt.Errorf("%s: %w", path, err)
	}
	return rc, nil
}

// resolvWatch re-reads a resolv.conf file when it changes and hands each
// usable version to apply. It watches the file's directory (editors and
// DHCP clients replace it by rename), the directory of its symlink target
// (systemd-resolved's stub file lives in /run/systemd/resolve), and the file
// itself (a file bind-mounted over /etc/resolv.conf, as `ip netns exec`
// does, changes in place and its directory entry never does).
type resolvWatch struct {
	path  string
	apply func(ResolvConf, error) // called with each reading; err means the old one stays
	w     *fsnotify.Watcher

	mu      sync.Mutex
	watched map[string]bool // directories and the file, as given to w.Add
	names   map[string]bool // event names that mean "the file changed"

	stop chan struct{}
	done chan struct{}
}

// resolvDebounce gathers the several events of one rewrite into one read.
const resolvDebounce = 100 * time.Millisecond

// watchResolvConf starts watching path. It returns an error when no watch
// could be set up at all; the caller keeps the file's first reading then.
func watchResolvConf(path string, apply func(ResolvConf, error)) (*resolvWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	rw := &resolvWatch{path: path, apply: apply, w: w, watched: map[string]bool{}, names: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	rw.addWatches()
	if len(rw.watched) == 0 {
		w.Close()
		return nil, fmt.Errorf("watch %s: no directory of it can be watched", path)
	}
	go rw.loop()
	return rw, nil
}

// addWatches (re)adds the watches for the file as it is now: its symlink
// target may have moved and a replaced file is a new inode.
func (rw *resolvWatch) addWatches() {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	paths := []string{rw.path}
	if target, err := filepath.EvalSymlinks(rw.path); err == nil && target != rw.path {
		paths = append(paths, target)
	}
	for _, p := range paths {
		rw.names[filepath.Clean(p)] = true
		if dir := filepath.Dir(p); !rw.watched[dir] {
			if rw.w.Add(dir) == nil {
				rw.watched[dir] = true
			}
		}
	}
	// The file itself, every time: after a rename-into-place the old
	// inode's watch is gone.
	if rw.w.Add(rw.path) == nil {
		rw.watched[rw.path] = true
	}
}

func (rw *resolvWatch) relevant(name string) bool {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.names[filepath.Clean(name)]
}

func (rw *resolvWatch) loop() {
	defer close(rw.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case ev, ok := <-rw.w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod || !rw.relevant(ev.Name) {
				continue
			}
			timer.Reset(resolvDebounce)
		case <-timer.C:
			rw.addWatches()
			rc, err := ReadResolvConf(rw.path)
			rw.apply(rc, err)
		case err, ok := <-rw.w.Errors:
			if !ok {
				return
			}
			rw.apply(ResolvConf{}, fmt.Errorf("watch %s: %w", rw.path, err))
		case <-rw.stop:
			timer.Stop()
			return
		}
	}
}

// Close stops the watch and waits for its goroutine.
func (rw *resolvWatch) Close() {
	close(rw.stop)
	rw.w.Close()
	<-rw.done
}
