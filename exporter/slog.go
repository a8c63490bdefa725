package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// NewSlogLogger returns a *slog.Logger that writes to a go-kit logger, for
// libraries (such as exporter-toolkit) that want log/slog. Each record is
// logged as msg=<message> followed by its attributes as key/values, at the
// go-kit level matching the slog level (below Info is debug). Groups are
// flattened into dotted keys. Level filtering is left to the go-kit
// logger (level.NewFilter).
func NewSlogLogger(logger log.Logger) *slog.Logger {
	return slog.New(&slogHandler{logger: logger})
}

type slogHandler struct {
	logger log.Logger
	// attrs are the key/values added with WithAttrs, already flattened.
	attrs []any
	// prefix is the dotted group path opened with WithGroup.
	prefix string
}

func (h *slogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	kv := make([]any, 0, 2+len(h.attrs)+2*r.NumAttrs())
	kv = append(kv, "msg", r.Message)
	kv = append(kv, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		kv = appendAttr(kv, h.prefix, a)
		return true
	})
	return leveled(h.logger, r.Level).Log(kv...)
}

func (h *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	nh := *h
	nh.attrs = slices.Clip(h.attrs)
	for _, a := range as {
		nh.attrs = appendAttr(nh.attrs, h.prefix, a)
	}
	return &nh
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	nh := *h
	nh.prefix = h.prefix + name + "."
	return &nh
}

func leveled(l log.Logger, lv slog.Level) log.Logger {
	switch {
	case lv >= slog.LevelError:
		return level.Error(l)
	case lv >= slog.LevelWarn:
		return level.Warn(l)
	case lv >= slog.LevelInfo:
		return level.Info(l)
	default:
		return level.Debug(l)
	}
}

func appendAttr(kv []any, prefix string, a slog.Attr) []any {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return kv
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			kv = appendAttr(kv, p, ga)
		}
		return kv
	}
	var v any
	switch a.Value.Kind() {
	case slog.KindAny:
		v = a.Value.Any()
		if _, ok := v.(error); !ok {
			if _, ok := v.(fmt.Stringer); !ok {
				v = fmt.Sprint(v)
			}
		}
	default:
		v = a.Value.Any()
	}
	return append(kv, prefix+a.Key, v)
}
