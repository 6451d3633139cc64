package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy"
	"github.com/egressd/egressd/proxy/accesslog"
	"github.com/egressd/egressd/proxy/config"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); empty: the embedded default config")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egressd serve [--config FILE]

Runs the proxy. Without --config it uses the embedded default: HTTP/CONNECT on
127.0.0.1:3128, SOCKS5 on 127.0.0.1:1080, admin on 127.0.0.1:9090 (metrics,
health, and the status page at http://127.0.0.1:9090/ unless admin.ui is
false), policy in report mode (public destinations allowed and logged as
decision=report, private and special-purpose ranges denied).

Signals: SIGHUP (or a change of the config file) reloads the policy; a bad
file is rejected and the old policy keeps serving. SIGTERM drains: /readyz
turns 503, after timeouts.drain_delay the listeners close, in-flight work gets
timeouts.drain; a second SIGTERM cuts at once. SIGUSR1 reopens
log.access_file (after logrotate renamed it).

Runtime: Go's settings come from the environment (GODEBUG, GOGC,
GOMEMLIMIT) and are logged at start ("go runtime"). The packaged systemd
unit, the container image and the Kubernetes manifest set a GODEBUG that
keeps the runtime's sysmon thread out of deep sleep: less CPU per new
connection (README, "Runtime settings for a farm", has the value).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "egressd serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, pol, raw, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "egressd: %v\n", err)
		return 1
	}
	diag, level := newDiagLogger(stderr, cfg.Log.Level)
	defer diag.Sync()
	logRuntime(diag)
	var access *zap.Logger
	var accessBuf *zapcore.BufferedWriteSyncer
	var accessFile *accesslog.File // nil: the access log goes to stdout
	if cfg.Log.Access {
		var w io.Writer = stdout
		if cfg.Log.AccessFile != "" {
			if accessFile, err = accesslog.OpenFile(cfg.Log.AccessFile); err != nil {
				diag.Error("startup failed", zap.String("key", "log.access_file"), zap.Error(err))
				return 1
			}
			defer accessFile.Close()
			w = accessFile
		}
		access, accessBuf = newAccessLogger(w)
		defer accessBuf.Stop() // flushes
	}
	srv, err := proxy.New(cfg, pol, raw, proxy.Options{Diag: diag, Access: access, Version: version})
	if err != nil {
		diag.Error("startup failed", zap.Error(err))
		return 1
	}
	// Signals are taken before the listeners open: once egressd answers
	// (readiness, a load balancer's check), a SIGHUP must reload and a
	// SIGTERM drain, not take the default action and kill it; one that
	// comes during the start waits here for the loop below.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	if err := srv.Start(); err != nil {
		diag.Error("startup failed", zap.Error(err))
		return 1
	}
	reload := func(why string) {
		// The error names FILE:LINE: key.path for every problem found.
		cfg, pol, raw, err := loadConfig(*path)
		if err != nil {
			srv.ReloadFailed()
			diag.Error("config reload rejected; the old policy keeps serving",
				zap.String("trigger", why), zap.String("path", *path), zap.Error(err))
			return
		}
		if err := srv.Reload(cfg, pol, raw); err != nil {
			// Reload counted the error (a users file that does not load).
			diag.Error("config reload rejected; the old policy keeps serving",
				zap.String("trigger", why), zap.String("path", *path), zap.Error(err))
			return
		}
		// log.level reloads here (validation accepted it).
		_ = level.UnmarshalText([]byte(cfg.Log.Level))
		diag.Info("config reloaded", zap.String("trigger", why), zap.String("path", *path))
	}
	watched := []string{*path}
	if *path != "" && cfg.Auth.UsersFile != "" {
		watched = append(watched, cfg.Auth.UsersFile)
	}
	changes, stopWatch := watchConfig(watched, diag)
	defer stopWatch()

	// reopen follows logrotate: the lines buffered so far go to the file
	// that was renamed, the next ones to a new file at log.access_file.
	reopen := func() {
		if accessFile == nil {
			diag.Info("SIGUSR1: the access log is not a file (log.access_file unset); nothing to reopen")
			return
		}
		_ = accessBuf.Sync()
		if err := accessFile.Reopen(); err != nil {
			diag.Error("access log not reopened; writing on to the file open before", zap.String("path", accessFile.Path()), zap.Error(err))
			return
		}
		diag.Info("access log reopened", zap.String("path", accessFile.Path()))
	}

	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				reload("SIGHUP")
				continue
			case syscall.SIGUSR1:
				reopen()
				continue
			}
			// First SIGTERM/SIGINT drains; a second one cuts at once.
			ctx, cut := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				srv.Drain(ctx)
				close(done)
			}()
			for {
				select {
				case <-done:
					cut()
					diag.Info("stopped")
					return 0
				case sig := <-sigs:
					switch sig {
					case syscall.SIGHUP:
					case syscall.SIGUSR1:
						reopen()
					default:
						diag.Info("second signal: cutting now")
						cut()
					}
				}
			}
		case <-changes:
			reload("file change")
		}
	}
}

// watchConfig reports changes of the config file and of the users file it
// names (paths[0] and the rest). It watches their directories, not the
// files, so that editors' rename-into-place and Kubernetes ConfigMap symlink
// swaps are seen. Events are debounced.
func watchConfig(paths []string, diag *zap.Logger) (<-chan struct{}, func()) {
	out := make(chan struct{}, 1)
	if len(paths) == 0 || paths[0] == "" {
		return out, func() {}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		diag.Warn("config file watch unavailable; SIGHUP still reloads", zap.Error(err))
		return out, func() {}
	}
	dirs := map[string]map[string]bool{} // directory -> file names in it that trigger a reload
	for _, p := range paths {
		dir, base := filepath.Dir(p), filepath.Base(p)
		if dirs[dir] == nil {
			if err := w.Add(dir); err != nil {
				diag.Warn("file watch unavailable; SIGHUP still reloads", zap.String("dir", dir), zap.Error(err))
				continue
			}
			// ConfigMaps swap a "..data" symlink; plain files change in place.
			dirs[dir] = map[string]bool{"..data": true}
		}
		dirs[dir][base] = true
	}
	if len(dirs) == 0 {
		w.Close()
		return out, func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if !dirs[filepath.Dir(ev.Name)][filepath.Base(ev.Name)] {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(250 * time.Millisecond)
				} else {
					timer.Reset(250 * time.Millisecond)
				}
				fire = timer.C
			case <-fire:
				fire = nil
				select {
				case out <- struct{}{}:
				default:
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				diag.Warn("config watch error", zap.Error(err))
			case <-stop:
				return
			}
		}
	}()
	return out, func() {
		close(stop)
		w.Close()
		<-done
	}
}

func loadConfig(path string) (*config.Config, *policy.Policy, []byte, error) {
	if path == "" {
		cfg, pol, err := config.Default()
		return cfg, pol, config.DefaultYAML(), err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, pol, err := config.LoadBytes(raw, path)
	return cfg, pol, raw, err
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// newAccessLogger writes one JSON line per request or tunnel to w with the
// contract keys only. Lines are buffered briefly to save a write per request.
func newAccessLogger(w io.Writer) (*zap.Logger, *zapcore.BufferedWriteSyncer) {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "ts",
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.MillisDurationEncoder,
		LineEnding:     zapcore.DefaultLineEnding,
	})
	ws := &zapcore.BufferedWriteSyncer{
		WS:            zapcore.AddSync(noSync{w}), // no fsync of stdout per flush
		Size:          256 * 1024,
		FlushInterval: 200 * time.Millisecond,
	}
	return zap.New(zapcore.NewCore(enc, ws, zapcore.InfoLevel)), ws
}

// newDiagLogger returns the diagnostics logger and its level, which a
// reload sets.
func newDiagLogger(w io.Writer, level string) (*zap.Logger, zap.AtomicLevel) {
	lvl := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	_ = lvl.UnmarshalText([]byte(level))
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		MessageKey:     "msg",
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		LineEnding:     zapcore.DefaultLineEnding,
	})
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), lvl
}

// noSync hides a writer's Sync (os.File's is fsync(2)): the access log is a
// stream for the log shipper, not a durable file, and fsync per flush costs
// I/O on the hot path.
type noSync struct{ io.Writer }
