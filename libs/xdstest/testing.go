package xdstest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openservicemesh/osm/libs/app/apptest"
)

// patience bounds every wait of the helpers below: long enough for a
// loaded machine, short enough for a failing test to end.
const patience = 10 * time.Second

// Dial connects to addr over mTLS as a proxy of identity uri (see
// ClientTLS); the connection closes when the test ends.
func (ca *CA) Dial(t testing.TB, addr, uri string) *grpc.ClientConn {
	t.Helper()
	tc, err := ca.ClientTLS(uri)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// RunProxy starts a proxy on cc (see StartProxy) that stops when the test
// ends.
func RunProxy(t testing.TB, cc grpc.ClientConnInterface, o ProxyOptions) *Proxy {
	t.Helper()
	p, err := StartProxy(t.Context(), cc, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Next returns the proxy's next response, failing the test when none comes.
func Next(t testing.TB, p *Proxy) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	r, err := p.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a response: %v", err)
	}
	return r
}

// Refusal waits for a stream expected to be refused and returns why it
// ended, failing the test when it goes on.
func Refusal(t testing.TB, p *Proxy) error {
	t.Helper()
	select {
	case <-p.Done():
		return p.Err()
	case <-time.After(patience):
		t.Fatal("the stream was not refused")
		return nil
	}
}

// WaitFor polls cond until it holds, failing the test when it does not.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	apptest.EventuallyTrue(t, what, patience, cond)
}
