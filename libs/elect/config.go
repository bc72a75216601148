package elect

import (
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"

	"github.com/openservicemesh/osm/libs/app"
)

// Config is the election's flags, the same in every service that elects a
// leader (the smi-watcher, the injector-webhook).
type Config struct {
	LeaderElect   bool
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	ReleaseLease  bool
}

// Flags registers the election flags; lease is the default Lease name.
func (c *Config) Flags(f *app.Flags, lease string) {
	f.Bool(&c.LeaderElect, "leader-elect", true,
		"elect, with a coordination Lease in --namespace, the one replica that does the leader's work (see the description above); turn off only when exactly one instance runs")
	f.String(&c.LeaseName, "lease-name", lease, "name of the coordination Lease in --namespace")
	f.Duration(&c.LeaseDuration, "lease-duration", 15*time.Second, "how long a standby waits after the leader's last renewal before it takes over")
	f.Duration(&c.RenewDeadline, "renew-deadline", 10*time.Second, "how long the leader tries to renew before it gives up the lead and stops its work")
	f.Duration(&c.RetryPeriod, "retry-period", 2*time.Second, "interval between attempts to acquire or renew the Lease")
	f.Bool(&c.ReleaseLease, "release-lease", true, "give the Lease up at shutdown so a standby takes over at once; false leaves it to expire, as a crash would")
}

// Validate checks the election flags the way leaderelection requires them;
// errors name the flag.
func (c Config) Validate() error {
	if !c.LeaderElect {
		return nil
	}
	switch {
	case c.LeaseName == "":
		return app.FlagError("lease-name", "is required with --leader-elect")
	case c.RetryPeriod <= 0:
		return app.FlagError("retry-period", "must be positive, got %s", c.RetryPeriod)
	case c.RenewDeadline <= c.RetryPeriod*6/5:
		return app.FlagError("renew-deadline", "must exceed 1.2 times --retry-period (%s), got %s", c.RetryPeriod, c.RenewDeadline)
	case c.LeaseDuration <= c.RenewDeadline:
		return app.FlagError("lease-duration", "must exceed --renew-deadline (%s), got %s", c.RenewDeadline, c.LeaseDuration)
	}
	return nil
}

// Options are the election's options for the Lease in namespace, held as
// identity (the pod's name).
func (c Config) Options(client kubernetes.Interface, namespace, identity string, log *logrus.Entry) Options {
	return Options{Client: client, Namespace: namespace, Name: c.LeaseName, Identity: identity,
		LeaseDuration: c.LeaseDuration, RenewDeadline: c.RenewDeadline, RetryPeriod: c.RetryPeriod,
		KeepLeaseOnStop: !c.ReleaseLease, Log: log}
}
