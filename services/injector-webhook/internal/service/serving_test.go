package service

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/services/injector-webhook/internal/certfile"
)

func TestCertFileCheckFailsOnAnExpiredCertificate(t *testing.T) {
	valid, err := certfile.NewCertReloader(keyPairFiles(t, t.TempDir(), time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := certFileCheck(valid)(t.Context()); err != nil {
		t.Fatalf("a valid certificate: %v", err)
	}
	expired, err := certfile.NewCertReloader(keyPairFiles(t, t.TempDir(), time.Now().Add(-time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if err := certFileCheck(expired)(t.Context()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate: %v, want an error saying it expired", err)
	}
}
