// Package meshcfg follows the mesh's MeshConfig from the smi-watcher's copy:
// the MeshConfig's key in KV mesh-observed (the bucket the policy-compiler
// compiles from, read with the same bus watch), so that a component needs
// no Kubernetes API call for it. Each version, and its absence, goes to
// Options.Apply. The xds-edge takes its certificate lifetime and stream
// limit from it; every component takes spec.observability from it
// (app.Runtime.ApplyObservability).
package meshcfg

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/backoff"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Buckets opens KV mesh-observed, waiting until it exists (bus.Conn).
type Buckets interface {
	WaitBucket(ctx context.Context, name string, waiting func(err error)) (*bus.Store, error)
}

// Options configure a Follower.
type Options struct {
	// Conn opens mesh-observed.
	Conn Buckets
	// Namespace and Name are the MeshConfig's (a component's --namespace
	// and --mesh-config, or OSM_NAMESPACE and OSM_MESH_CONFIG).
	Namespace, Name string
	// Apply is called with each version of the MeshConfig, and with nil
	// when there is none: once the watch has delivered what the bucket
	// held, when nothing was there, at each delete, and while
	// mesh-observed does not exist yet. Calls come from one goroutine, in
	// order.
	Apply func(mc *meshv1.MeshConfig)
	Log   *logrus.Entry
}

// Follower watches one MeshConfig in mesh-observed.
type Follower struct {
	o   Options
	key string
}

// New returns a follower; Start runs it.
func New(o Options) (*Follower, error) {
	if o.Conn == nil || o.Apply == nil || o.Log == nil || o.Name == "" || o.Namespace == "" {
		return nil, errors.New("meshcfg: Conn, Apply, Log, Namespace and Name are required")
	}
	return &Follower{o: o, key: layout.ObservedKey(layout.KindMeshConfig, o.Namespace, o.Name)}, nil
}

// Start follows the MeshConfig until ctx ends. A watch that ends (the
// bucket was lost and declared again, say) is started again after a
// backoff, from the bucket's current value; it returns nil when ctx ends.
func (f *Follower) Start(ctx context.Context) error {
	log := f.o.Log.WithFields(logrus.Fields{"namespace": f.o.Namespace, "name": f.o.Name})
	applied := false
	for attempt := 1; ; attempt++ {
		store, err := f.o.Conn.WaitBucket(ctx, bus.BucketObserved, func(err error) {
			log.WithError(err).WithField("bucket", bus.BucketObserved).Warn("waiting for bucket to read the MeshConfig")
			if !applied {
				// No bucket, no MeshConfig: the edge need not wait for one.
				applied = true
				f.o.Apply(nil)
			}
		})
		if err != nil {
			return nil // ctx ended
		}
		applied = true
		delivered, err := f.follow(ctx, store, log)
		if ctx.Err() != nil {
			return nil
		}
		if delivered {
			attempt = 1
		}
		wait := backoff.Wait(500*time.Millisecond, 30*time.Second, attempt)
		log.WithError(err).WithField("retry_in", wait.String()).Warn("meshconfig watch ended; watching again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// follow runs one watch of the key and applies what it delivers; it
// returns when the watch ends, saying whether it delivered anything.
func (f *Follower) follow(ctx context.Context, store *bus.Store, log *logrus.Entry) (bool, error) {
	w, err := store.Watch(ctx, f.key)
	if err != nil {
		return false, err
	}
	defer w.Stop()
	delivered, seen := false, false
	for ev := range w.Events() {
		delivered = true
		switch ev.Kind {
		case bus.EventPut:
			mc := &meshv1.MeshConfig{}
			if err := ev.Decode(mc); err != nil {
				log.WithError(err).WithField("revision", ev.Revision).Error("meshconfig does not decode; keeping the last one")
				continue
			}
			seen = true
			f.o.Apply(mc)
		case bus.EventDelete:
			seen = true
			f.o.Apply(nil)
		case bus.EventInitialized:
			if !seen {
				f.o.Apply(nil)
			}
		}
	}
	return delivered, w.Ended(ctx)
}
