package kube

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/sirupsen/logrus"
)

// klogSink routes client-go's klog output (leader election, reflector
// errors) into the service's logrus logger, so every line is structured
// like the service's own. klog verbosity 0 is info, 1 to 3 debug, 4 and up
// trace.
type klogSink struct {
	e *logrus.Entry
}

var _ logr.LogSink = klogSink{}

func klogLogger(e *logrus.Entry) logr.Logger {
	return logr.New(klogSink{e: e.WithField("source", "client-go")})
}

// Init implements logr.LogSink.
func (s klogSink) Init(logr.RuntimeInfo) {}

func level(v int) logrus.Level {
	switch {
	case v <= 0:
		return logrus.InfoLevel
	case v < 4:
		return logrus.DebugLevel
	}
	return logrus.TraceLevel
}

// Enabled implements logr.LogSink.
func (s klogSink) Enabled(v int) bool { return s.e.Logger.IsLevelEnabled(level(v)) }

// Info implements logr.LogSink.
func (s klogSink) Info(v int, msg string, kv ...any) {
	s.with(kv).Log(level(v), msg)
}

// Error implements logr.LogSink.
func (s klogSink) Error(err error, msg string, kv ...any) {
	s.with(kv).WithError(err).Error(msg)
}

// WithValues implements logr.LogSink.
func (s klogSink) WithValues(kv ...any) logr.LogSink { return klogSink{e: s.with(kv)} }

// WithName implements logr.LogSink.
func (s klogSink) WithName(name string) logr.LogSink {
	if prev, ok := s.e.Data["logger"].(string); ok && prev != "" {
		name = prev + "/" + name
	}
	return klogSink{e: s.e.WithField("logger", name)}
}

func (s klogSink) with(kv []any) *logrus.Entry {
	if len(kv) == 0 {
		return s.e
	}
	f := make(logrus.Fields, len(kv)/2+1)
	for i := 0; i < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		if i+1 < len(kv) {
			f[key] = kv[i+1]
		} else {
			f[key] = "(missing value)"
		}
	}
	return s.e.WithFields(f)
}
