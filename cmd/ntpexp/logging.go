package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

func parseLevel(s string) (level.Option, error) {
	switch strings.ToLower(s) {
	case "debug":
		return level.AllowDebug(), nil
	case "info", "":
		return level.AllowInfo(), nil
	case "warn", "warning":
		return level.AllowWarn(), nil
	case "error", "critical":
		return level.AllowError(), nil
	}
	return nil, fmt.Errorf("unknown log level %q", s)
}

// reopenWriter writes to a log file and reopens it on demand (SIGHUP),
// so logrotate can move the file away. Files are created 0640.
type reopenWriter struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*reopenWriter, error) {
	w := &reopenWriter{path: path}
	if err := w.Reopen(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *reopenWriter) Reopen() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("monitoring.log_file %s: %w (create its directory, or make it writable by the user ntpexp runs as)", w.path, err)
	}
	w.mu.Lock()
	old := w.f
	w.f = f
	w.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (w *reopenWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Write(p)
}

func (w *reopenWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// newLogger builds the one logger of the process.
func newLogger(out io.Writer, format, lvl string, debug bool) (log.Logger, error) {
	opt, err := parseLevel(lvl)
	if err != nil {
		return nil, err
	}
	if debug {
		opt = level.AllowDebug()
	}
	sw := log.NewSyncWriter(out)
	var l log.Logger
	if format == "json" {
		l = log.NewJSONLogger(sw)
	} else {
		l = log.NewLogfmtLogger(sw)
	}
	l = level.NewFilter(l, opt)
	return log.With(l, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller), nil
}
