package accesslog

import (
	"fmt"
	"os"
	"sync"
)

// File is an access-log file that can be reopened at the same path, for
// log.access_file and logrotate: after logrotate renames the file, SIGUSR1
// makes egressd call Reopen, and the next line goes to a new file at the
// path while the renamed one is closed. It is safe for concurrent use.
type File struct {
	path string

	mu sync.Mutex
	f  *os.File
}

// fileMode is what a new access-log file is created with (before the
// process umask): readable by the group of log shippers.
const fileMode = 0o640

// OpenFile opens path for appending, creating it if needed.
func OpenFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Write appends p to the file open now.
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Write(p)
}

// Reopen opens the path again and closes the file it had open. Callers
// flush their buffers into the old file first, so that every line written
// before the rename lands in the renamed file. If the path cannot be
// opened, the old file stays in use and the error is returned.
func (f *File) Reopen() error {
	nf, err := openAppend(f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.f
	f.f = nf
	f.mu.Unlock()
	return old.Close()
}

// Close closes the file.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Close()
}
