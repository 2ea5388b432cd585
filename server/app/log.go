package app

import (
	"context"
	"io"
	"log/slog"

	"github.com/livepatch-onprem/livepatch/server/config"
)

// redactingHandler passes every log record through config.Redact before h writes it: a
// message, string or error that quotes a URL with credentials (a proxy in an error from
// the transport, an upstream in a config problem) never reaches the log.
type redactingHandler struct {
	h slog.Handler
}

func (r redactingHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, config.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	for i, a := range attrs {
		attrs[i] = redactAttr(a)
	}
	return redactingHandler{r.h.WithAttrs(attrs)}
}

func (r redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{r.h.WithGroup(name)}
}

// redactAttr redacts the strings and errors of an attribute, in groups too.
func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, config.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		attrs := make([]any, len(group))
		for i, g := range group {
			attrs[i] = redactAttr(g)
		}
		return slog.Group(a.Key, attrs...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, config.Redact(err.Error()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// NewLogger returns the server's JSON logger at level (info when it is not a level), every
// record redacted of credentials.
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(redactingHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})})
}
