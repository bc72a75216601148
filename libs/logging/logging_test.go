package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestJSONWithTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "info", FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	l.WithField("component", "test").WithContext(ctx).Info("pushed config")
	l.Debug("not shown at info")

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	want := map[string]string{"msg": "pushed config", "level": "info", "component": "test",
		"trace_id": tid.String(), "span_id": sid.String()}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %s", k, line[k], v)
		}
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "loud", FormatJSON); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := New(&bytes.Buffer{}, "info", "xml"); err == nil {
		t.Error("bad format accepted")
	}
}
