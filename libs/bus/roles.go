package bus

import (
	"fmt"
	"sort"
)

// Role is the part a client plays on the bus. Each KV bucket and status
// subject has exactly one writer role; NATS permissions enforce it, so that a
// compromised edge cannot write compiled config.
type Role string

// The roles of the five deployables, plus an administrative role for the
// embedded dev server, tests and operators.
const (
	RoleWatcher  Role = "watcher"
	RoleCompiler Role = "compiler"
	RoleCA       Role = "ca"
	RoleEdge     Role = "edge"
	RoleInjector Role = "injector"
	RoleAdmin    Role = "admin"
)

// Status subjects (core NATS).
const (
	// SubjectPolicyStatus carries PolicyStatus messages: mesh.status.policy.<kind>.<ns>.<name>.
	SubjectPolicyStatus = "mesh.status.policy"
	// SubjectProxyStatus carries ProxyStatus messages: mesh.status.proxy.<edge>.<proxy>.
	SubjectProxyStatus = "mesh.status.proxy"
)

// Roles lists every role, admin last.
func Roles() []Role {
	return []Role{RoleWatcher, RoleCompiler, RoleCA, RoleEdge, RoleInjector, RoleAdmin}
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	for _, k := range Roles() {
		if r == k {
			return true
		}
	}
	return false
}

// InboxPrefix is the reply-subject prefix a client of this role uses. Each
// role gets its own so that no role can read another's replies.
func (r Role) InboxPrefix() string { return "_INBOX_" + string(r) }

// access is what a role may do: the buckets it writes, the buckets it reads,
// and the core subjects it publishes and subscribes to.
type access struct {
	writes, reads []string
	pub, sub      []string
}

// roleAccess is the single definition of who may do what on the bus.
var roleAccess = map[Role]access{
	RoleWatcher: {
		writes: []string{BucketObserved},
		sub:    []string{SubjectPolicyStatus + ".>"},
	},
	RoleCompiler: {
		writes: []string{BucketCompiled, BucketLeases},
		reads:  []string{BucketObserved},
		pub:    []string{SubjectPolicyStatus + ".>"},
	},
	RoleCA: {
		writes: []string{BucketTrust},
		// mesh-observed for the MeshConfig's spec.observability
		// (libs/meshcfg), which every component follows.
		reads: []string{BucketObserved},
	},
	RoleEdge: {
		// mesh-observed only for its debug API: osm convergence OBJECT
		// asks an edge for the object's latest entry (Store.Last).
		reads: []string{BucketCompiled, BucketTrust, BucketObserved},
		pub:   []string{SubjectProxyStatus + ".>"},
	},
	RoleInjector: {
		reads: []string{BucketTrust},
	},
}

// Permissions are the subjects a role may publish and subscribe to, in the
// shape of a NATS server authorization block (so the Helm chart can render
// the same lists into the server's config).
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// PermissionsFor returns the allow-lists for role. The admin role is
// unrestricted and returns nil.
func PermissionsFor(r Role) (*Permissions, error) {
	if r == RoleAdmin {
		return nil, nil
	}
	a, ok := roleAccess[r]
	if !ok {
		return nil, fmt.Errorf("unknown bus role %q", r)
	}
	pub := []string{"$JS.API.INFO"}
	pub = append(pub, a.pub...)
	for _, b := range append(append([]string{}, a.writes...), a.reads...) {
		pub = append(pub, readSubjects(b)...)
	}
	for _, b := range a.writes {
		pub = append(pub, writeSubjects(b)...)
	}
	sub := []string{r.InboxPrefix() + ".>"}
	sub = append(sub, a.sub...)
	return &Permissions{Publish: dedupe(pub), Subscribe: dedupe(sub)}, nil
}

// readSubjects are the JetStream API subjects needed to get keys from and
// watch a KV bucket with ephemeral pull consumers (see Store.Watch) and
// direct gets.
func readSubjects(bucket string) []string {
	s := "KV_" + bucket
	return []string{
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.CONSUMER.CREATE." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>",
		"$JS.API.CONSUMER.INFO." + s + ".*",
		"$JS.API.CONSUMER.DELETE." + s + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
		"$JS.API.STREAM.MSG.GET." + s,
	}
}

// writeSubjects are what the single writer of a bucket needs beyond reading:
// declaring the bucket and putting keys.
func writeSubjects(bucket string) []string {
	s := "KV_" + bucket
	return []string{
		"$JS.API.STREAM.CREATE." + s,
		"$JS.API.STREAM.UPDATE." + s,
		"$KV." + bucket + ".>",
	}
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
