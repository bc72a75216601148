// Package logging sets up the logrus logger every OSM component uses: JSON
// in the cluster, text locally, and the trace and span ids of the entry's
// context on every line.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/trace"
)

// Formats accepted by New.
const (
	FormatJSON = "json"
	FormatText = "text"
)

// New returns a logger writing to out at level ("debug", "info", ...) in
// format ("json" or "text"), with the trace hook installed.
func New(out io.Writer, level, format string) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: want one of panic, fatal, error, warn, info, debug, trace", level)
	}
	l := logrus.New()
	l.SetOutput(out)
	l.SetLevel(lvl)
	switch format {
	case FormatJSON:
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case FormatText:
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
	l.AddHook(TraceHook{})
	return l, nil
}

// TraceHook adds trace_id and span_id to entries logged WithContext(ctx)
// when ctx carries a valid span context.
type TraceHook struct{}

var _ logrus.Hook = TraceHook{}

// Levels reports that the hook fires on every level.
func (TraceHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire adds the ids.
func (TraceHook) Fire(e *logrus.Entry) error {
	if e.Context == nil {
		return nil
	}
	sc := trace.SpanContextFromContext(e.Context)
	if !sc.IsValid() {
		return nil
	}
	e.Data["trace_id"] = sc.TraceID().String()
	e.Data["span_id"] = sc.SpanID().String()
	return nil
}

// Buffer is an in-memory log sink that several goroutines may write at once
// (a service run in-process, whose logs a test or a debug page reads back).
// The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
