package kube

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestKlogGoesToLogrus(t *testing.T) {
	var out bytes.Buffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetFormatter(&logrus.JSONFormatter{DisableTimestamp: true})
	l.SetLevel(logrus.DebugLevel)
	log := klogLogger(logrus.NewEntry(l)).WithName("leaderelection").WithValues("lock", "osm-system/osm-smi-watcher")
	log.Info("Successfully acquired lease")
	log.V(2).Info("renewed", "odd")
	log.V(5).Info("trace only")
	log.Error(errors.New("boom"), "failed to renew")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		`{"level":"info","lock":"osm-system/osm-smi-watcher","logger":"leaderelection","msg":"Successfully acquired lease","source":"client-go"}`,
		`{"level":"debug","lock":"osm-system/osm-smi-watcher","logger":"leaderelection","msg":"renewed","odd":"(missing value)","source":"client-go"}`,
		`{"error":"boom","level":"error","lock":"osm-system/osm-smi-watcher","logger":"leaderelection","msg":"failed to renew","source":"client-go"}`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], want[i])
		}
	}
}
