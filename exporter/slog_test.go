package exporter

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

func TestSlogBridge(t *testing.T) {
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want string
	}{
		{
			name: "info with attributes",
			log:  func(l *slog.Logger) { l.Info("Listening on", "address", "127.0.0.1:10123", "http2", false) },
			want: `level=info msg="Listening on" address=127.0.0.1:10123 http2=false`,
		},
		{
			name: "levels",
			log: func(l *slog.Logger) {
				l.Debug("d")
				l.Warn("w")
				l.Error("e", "err", errors.New("boom"))
			},
			want: "level=debug msg=d\nlevel=warn msg=w\nlevel=error msg=e err=boom",
		},
		{
			name: "with attrs and groups",
			log: func(l *slog.Logger) {
				l.With("component", "web").WithGroup("tls").Info("TLS is enabled.",
					"timeout", 5*time.Second, slog.Group("peer", "addr", "::1"), "list", []int{1, 2})
			},
			want: `level=info msg="TLS is enabled." component=web tls.timeout=5s tls.peer.addr=::1 tls.list="[1 2]"`,
		},
		{
			name: "filtered by the go-kit level filter",
			log:  func(l *slog.Logger) { l.Debug("hidden"); l.Info("shown") },
			want: "level=info msg=shown",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var logger log.Logger = log.NewLogfmtLogger(&buf)
			if strings.HasPrefix(tc.name, "filtered") {
				logger = level.NewFilter(logger, level.AllowInfo())
			}
			tc.log(NewSlogLogger(logger))
			if got := strings.TrimSpace(buf.String()); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
