// Package elect runs a function only while this instance holds a
// coordination.k8s.io Lease (client-go leaderelection), so that exactly one
// replica of a component does some work while the others stay warm and
// take over within the lease duration. The smi-watcher elects the replica
// that writes KV mesh-observed with it, the injector-webhook the replica
// that reconciles and renews bootstrap Secrets.
package elect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options configure the election.
type Options struct {
	// Client creates and renews the Lease.
	Client kubernetes.Interface
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// Identity is this instance's holder identity (its pod name).
	Identity string
	// LeaseDuration is how long a standby waits after the last renewal
	// before it takes over; a crashed leader is replaced within it.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before it
	// gives up the lead.
	RenewDeadline time.Duration
	// RetryPeriod is the interval between attempts to acquire or renew.
	RetryPeriod time.Duration
	// KeepLeaseOnStop leaves the Lease to expire when ctx ends instead of
	// releasing it, so a standby waits the lease duration, as after a crash.
	KeepLeaseOnStop bool
	// Log is the component's logger.
	Log *logrus.Entry
}

// Validate checks the durations the way leaderelection requires them.
func (o Options) Validate() error {
	switch {
	case o.Client == nil:
		return errors.New("elect: a client is required")
	case o.Namespace == "" || o.Name == "":
		return errors.New("elect: the lease namespace and name are required")
	case o.Identity == "":
		return errors.New("elect: an identity is required")
	case o.LeaseDuration <= o.RenewDeadline:
		return fmt.Errorf("elect: the lease duration %s must exceed the renew deadline %s", o.LeaseDuration, o.RenewDeadline)
	case float64(o.RenewDeadline) <= leaderelection.JitterFactor*float64(o.RetryPeriod):
		return fmt.Errorf("elect: the renew deadline %s must exceed %.1f times the retry period %s", o.RenewDeadline, leaderelection.JitterFactor, o.RetryPeriod)
	case o.RetryPeriod <= 0:
		return errors.New("elect: the retry period must be positive")
	}
	return nil
}

// Run campaigns for the Lease until ctx ends. Each time this instance
// becomes leader, lead runs with a context that is cancelled when the lead
// is lost; after a loss Run campaigns again. On ctx's end the Lease is
// released (unless KeepLeaseOnStop), so a standby takes over at once instead
// of after the lease duration.
func Run(ctx context.Context, o Options, lead func(ctx context.Context)) error {
	if err := o.Validate(); err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name},
		Client:     o.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: o.Identity},
	}
	log := o.Log.WithFields(logrus.Fields{"lease": o.Namespace + "/" + o.Name, "identity": o.Identity})
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   o.LeaseDuration,
			RenewDeadline:   o.RenewDeadline,
			RetryPeriod:     o.RetryPeriod,
			ReleaseOnCancel: !o.KeepLeaseOnStop,
			Name:            o.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("acquired the lease")
					lead(ctx)
				},
				OnStoppedLeading: func() { log.Info("released or lost the lease") },
				OnNewLeader: func(id string) {
					if id != o.Identity {
						log.WithField("leader", id).Info("another instance leads")
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("elect: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}
