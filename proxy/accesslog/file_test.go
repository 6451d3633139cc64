package accesslog

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestFileReopen: lines written before a rename and Reopen are in the
// renamed file, lines after it in a new file at the path; lines written
// concurrently with the rotation are all somewhere, none twice.
func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("renamed, not reopened\n")); err != nil {
		t.Fatal(err)
	}

	const writers, lines = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range lines {
				if _, err := f.Write([]byte("w" + string(rune('a'+w)) + "\n")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := f.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}

	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(old), "before\nrenamed, not reopened\n") {
		t.Errorf("renamed file starts %q", string(old)[:min(len(old), 40)])
	}
	if !strings.HasSuffix(string(cur), "after\n") {
		t.Errorf("new file ends %q", cur)
	}
	all := strings.Count(string(old), "\n") + strings.Count(string(cur), "\n")
	if want := 3 + writers*lines; all != want {
		t.Errorf("%d lines in both files, want %d", all, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm()&0o137 != 0 {
		t.Errorf("new file mode %v, %v: want at most 0640", st.Mode(), err)
	}
}

func TestFileReopenFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "access.log")
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The directory goes away: the path cannot be opened again.
	if err := os.Rename(filepath.Dir(path), filepath.Join(dir, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err == nil {
		t.Fatal("Reopen succeeded without a directory")
	}
	if _, err := f.Write([]byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "moved", "access.log")); string(b) != "still here\n" {
		t.Errorf("old file has %q", b)
	}
	if _, err := OpenFile(filepath.Join(dir, "none", "x.log")); err == nil {
		t.Error("OpenFile in a missing directory succeeded")
	}
}
