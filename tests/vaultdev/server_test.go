//go:build unix

package vaultdev

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestDevServerPauseResume starts a real dev server, checks it is unsealed,
// and checks that a paused server does not answer and answers again once
// resumed.
func TestDevServerPauseResume(t *testing.T) {
	s := Start(t)
	h := s.Root(t, http.MethodGet, "sys/health", nil)
	if h["sealed"] != false || h["initialized"] != true {
		t.Fatalf("health: %v", h)
	}
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := s.Do(ctx, http.MethodGet, "sys/health", "", nil)
	cancel()
	if err == nil {
		t.Fatal("a paused server answered")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(t.Context(), http.MethodGet, "sys/health", "", nil); err != nil {
		t.Fatalf("resumed server: %v", err)
	}
	if _, err := s.Do(t.Context(), http.MethodGet, "sys/mounts", "wrong-token", nil); err == nil {
		t.Fatal("a wrong token was accepted")
	} else if e, ok := err.(*Error); !ok || e.Status != http.StatusForbidden {
		t.Fatalf("wrong token: %v, want HTTP 403", err)
	}
}
