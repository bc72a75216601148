//go:build unix

package vaultdev

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RootToken is the dev server's root token.
const RootToken = "root"

// Options configures StartServer.
type Options struct {
	// Binary is the vault binary; default the result of Binary.
	Binary string
	// Build configures the build when Binary is empty.
	Build BuildOptions
	// ReadyTimeout bounds the wait for the server; default 60s.
	ReadyTimeout time.Duration
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Server is a running `vault server -dev` on loopback.
type Server struct {
	addr   string
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	exited chan struct{}
	http   *http.Client

	stopOnce sync.Once
	logMu    sync.Mutex
}

// Start starts a dev server for a test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	s, err := StartServer(ctx, Options{Logf: t.Logf, Build: BuildOptions{Output: testWriter{t}}})
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop vault: %v", err)
		}
	})
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// StartServer builds vault if needed and starts a dev server on a free
// loopback port with root token RootToken.
func StartServer(ctx context.Context, o Options) (*Server, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(ctx, o.Build); err != nil {
			return nil, err
		}
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id="+RootToken, "-dev-listen-address="+addr, "-log-level=warn")
	env := []string{"GODEBUG=x509negativeserial=1", "HOME=" + os.TempDir(), "PATH=" + os.Getenv("PATH")}
	cmd.Env = env
	s := &Server{addr: addr, cmd: cmd, logs: &bytes.Buffer{}, exited: make(chan struct{}), http: &http.Client{Timeout: 10 * time.Second}}
	cmd.Stdout = &lockedWriter{s: s}
	cmd.Stderr = &lockedWriter{s: s}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	logf("vault dev server starting at %s (pid %d)", s.URL(), cmd.Process.Pid)
	deadline := time.Now().Add(o.ReadyTimeout)
	for {
		if _, err := s.Do(ctx, http.MethodGet, "sys/health", "", nil); err == nil {
			break
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("vault exited before it was ready:\n%s", s.Logs())
		case <-ctx.Done():
			_ = s.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			return nil, fmt.Errorf("vault not ready after %s:\n%s", o.ReadyTimeout, s.Logs())
		}
	}
	logf("vault dev server ready")
	return s, nil
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	return w.s.logs.Write(p)
}

// Logs is the server's output so far.
func (s *Server) Logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logs.String()
}

// URL is the server's address, http://127.0.0.1:<port>.
func (s *Server) URL() string { return "http://" + s.addr }

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Pause stops the server process (SIGSTOP): connections are accepted by the
// kernel but never answered, as with a hung or partitioned Vault. It
// returns once every thread has stopped (on Linux; elsewhere after 200ms).
func (s *Server) Pause() error {
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for !allStopped(s.Pid()) {
		if time.Now().After(deadline) {
			if runtime.GOOS == "linux" {
				return fmt.Errorf("vault (pid %d) did not stop within 2s of SIGSTOP", s.Pid())
			}
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Stop terminates the server.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
	return nil
}

// Error is a non-2xx answer from Vault.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Errors are Vault's error messages.
	Errors []string
}

// Error formats the status and messages.
func (e *Error) Error() string {
	return fmt.Sprintf("vault HTTP %d: %s", e.Status, strings.Join(e.Errors, "; "))
}

// Do calls the Vault HTTP API at /v1/<path> with token (none if empty) and
// a JSON body, and returns the decoded JSON response (nil for 204).
func (s *Server) Do(ctx context.Context, method, path, token string, body any) (map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+"/v1/"+strings.TrimPrefix(path, "/"), rd)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			return nil, fmt.Errorf("vault %s %s: HTTP %d, undecodable body: %w", method, path, resp.StatusCode, err)
		}
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if errs, ok := out["errors"].([]any); ok {
			for _, x := range errs {
				e.Errors = append(e.Errors, fmt.Sprint(x))
			}
		}
		return out, e
	}
	return out, nil
}

// Root calls Do with the root token and fails t on error.
func (s *Server) Root(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	out, err := s.Do(t.Context(), method, path, RootToken, body)
	if err != nil {
		t.Fatalf("vault %s %s: %v", method, path, err)
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func itoa(i int) string { return strconv.Itoa(i) }
