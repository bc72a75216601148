package cpcert

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/openservicemesh/osm/libs/caclient"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// Bundle follows the CA's trust bundle with WatchTrustBundle and holds its
// roots, PEM encoded, for the webhook configuration's caBundle.
type Bundle struct {
	client             cav1.CertificateAuthorityServiceClient
	log                *logrus.Entry
	minRetry, maxRetry time.Duration

	mu      sync.RWMutex
	version string
	roots   []byte
	signing []byte
	subs    []chan struct{}
}

// NewBundle returns the watcher; minRetry and maxRetry bound the jittered
// backoff between reconnections (defaults 1s and 1m).
func NewBundle(client cav1.CertificateAuthorityServiceClient, log *logrus.Entry, minRetry, maxRetry time.Duration) *Bundle {
	if minRetry <= 0 {
		minRetry = time.Second
	}
	if maxRetry < minRetry {
		maxRetry = max(time.Minute, minRetry)
	}
	if log == nil {
		log = logrus.NewEntry(logrus.New())
	}
	return &Bundle{client: client, log: log, minRetry: minRetry, maxRetry: maxRetry}
}

// RootsPEM is the current bundle's roots; an error until one arrived.
func (b *Bundle) RootsPEM() ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.roots == nil {
		return nil, errors.New("no trust bundle from the cert-authority yet")
	}
	return b.roots, nil
}

// SigningRootPEM is the current bundle's signing root; nil when no bundle
// arrived or none of its roots is marked signing.
func (b *Bundle) SigningRootPEM() ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.signing, nil
}

// Subscribe returns a channel that receives a value after each new bundle
// version (coalesced: a slow reader sees one value for several versions).
func (b *Bundle) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	b.subs = append(b.subs, ch)
	b.mu.Unlock()
	return ch
}

// Check is a readiness check: a bundle has arrived.
func (b *Bundle) Check(context.Context) error {
	_, err := b.RootsPEM()
	return err
}

// Start watches the bundle until ctx ends, reconnecting with jittered
// backoff.
func (b *Bundle) Start(ctx context.Context) error {
	bo := &backoff{min: b.minRetry, max: b.maxRetry}
	for {
		err := b.watch(ctx, bo)
		if ctx.Err() != nil {
			return nil
		}
		wait := bo.next()
		b.log.WithContext(ctx).WithError(err).WithField("retry_in", wait.String()).Warn("trust bundle watch ended; reconnecting")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (b *Bundle) watch(ctx context.Context, bo *backoff) error {
	b.mu.RLock()
	known := b.version
	b.mu.RUnlock()
	// WaitForReady: while the CA restarts, the call waits for the
	// connection rather than failing into a growing backoff.
	stream, err := b.client.WatchTrustBundle(ctx, &cav1.WatchTrustBundleRequest{KnownVersion: known}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return errors.New("the cert-authority closed the stream")
		}
		if err != nil {
			return err
		}
		bo.reset()
		tb := resp.GetTrustBundle()
		roots := caclient.RootsPEM(tb)
		if len(roots) == 0 {
			b.log.WithContext(ctx).WithField("version", tb.GetVersion()).Warn("trust bundle without roots ignored")
			continue
		}
		b.mu.Lock()
		same := tb.GetVersion() == b.version
		b.version, b.roots, b.signing = tb.GetVersion(), roots, caclient.SigningRootPEM(tb)
		subs := b.subs
		b.mu.Unlock()
		if same {
			continue
		}
		b.log.WithContext(ctx).WithFields(logrus.Fields{"version": tb.GetVersion(), "roots": len(tb.GetRoots())}).Info("trust bundle updated")
		for _, ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
