package service

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/certfile"
)

func TestCertFileCheckFailsOnAnExpiredCertificate(t *testing.T) {
	valid, err := loadPair(keyPairFiles(t, t.TempDir(), time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := certFileCheck(valid)(t.Context()); err != nil {
		t.Fatalf("a valid certificate: %v", err)
	}
	expired, err := loadPair(keyPairFiles(t, t.TempDir(), time.Now().Add(-time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if err := certFileCheck(expired)(t.Context()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate: %v, want an error saying it expired", err)
	}
}

// loadPair loads a key pair as the admission server does.
func loadPair(certFile, keyFile string) (*certfile.Pair, error) {
	return certfile.Load(certFile, keyFile, certfile.Options{})
}
