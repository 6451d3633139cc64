package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHealthTarget(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, config, want string
		err                bool
	}{
		{name: "embedded default", want: "http://127.0.0.1:9090/readyz"},
		{name: "listen.admin", config: write("a.yaml", "listen:\n  admin: \"10.1.2.3:9191\"\n"), want: "http://10.1.2.3:9191/readyz"},
		{name: "no admin key: the default", config: write("b.yaml", "log:\n  level: debug\n"), want: "http://127.0.0.1:9090/readyz"},
		{name: "wildcard v4", config: write("c.yaml", "listen:\n  admin: \"0.0.0.0:9090\"\n"), want: "http://127.0.0.1:9090/readyz"},
		{name: "wildcard, no host", config: write("d.yaml", "listen:\n  admin: \":9292\"\n"), want: "http://127.0.0.1:9292/readyz"},
		{name: "wildcard v6", config: write("e.yaml", "listen:\n  admin: \"[::]:9090\"\n"), want: "http://[::1]:9090/readyz"},
		// A file a reload would reject still names the running listener.
		{name: "invalid policy, admin readable", config: write("f.yaml", "listen:\n  admin: \"127.0.0.2:9090\"\npolicy:\n  mode: maybe\n"), want: "http://127.0.0.2:9090/readyz"},
		{name: "admin disabled", config: write("g.yaml", "listen:\n  admin: \"\"\n"), err: true},
		{name: "missing file", config: filepath.Join(dir, "none.yaml"), err: true},
		{name: "not YAML", config: write("h.yaml", "listen: [\n"), err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, err := adminAddr(tt.config)
			var url string
			if err == nil {
				url, err = readyzURL(addr)
			}
			if tt.err {
				if err == nil {
					t.Fatalf("got %q, want an error", url)
				}
				return
			}
			if err != nil || url != tt.want {
				t.Fatalf("got %q, %v; want %q", url, err, tt.want)
			}
		})
	}
}
