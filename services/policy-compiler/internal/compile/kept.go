package compile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/model"
)

// Kept versions: the last accepted versions that outlive the engine.
//
// A rejected policy object keeps its last accepted version (review), which
// lives only in the engine that accepted it. So that a restarted compiler,
// or a standby that takes the lease over, serves what its predecessor
// served, each Compile reports in Delta.Kept the objects whose latest
// verdict is a rejection and that hold an accepted version, with that
// version encoded (Kept.Value: deterministic JSON of the accepted value,
// format KeptFormat), and in Delta.DeletedKept those that no longer have
// one (accepted again, deleted, or displaced). The pipeline stores them in
// mesh-compiled (layout.AcceptedKey) with the generation; Seed gives them
// to a new engine before its first Compile, and the seeded version is
// accepted in place of an object's observed one as long as the object
// stays rejected, so the new engine compiles what the old one served.
//
// Only reviewed objects are looked at, so the cost of a Compile grows with
// the policies it reviews, and the records with the rejected objects.

// KeptFormat is the version of the encoding of Kept.Value. Bump it when an
// accepted form (Target, Split, HTTPMatch, TCPMatch, policy.AcceptedRetry,
// Upstream, ingressPolicy, egressPolicy and what they hold) changes shape:
// a compiler seeds only records of its own format and compiles the others
// cold. TestKeptFormatShape fails when a shape changes.
const KeptFormat = 2

// Kept is the last accepted version of a policy object whose latest
// verdict is a rejection.
type Kept struct {
	// Kind is the object's observed kind (layout.Kind...).
	Kind string
	// NN names the object.
	NN model.NN
	// Value is the accepted version, encoded in format KeptFormat.
	Value []byte
}

// Key is the record's key in KV mesh-compiled.
func (k *Kept) Key() string { return layout.AcceptedKey(k.Kind, k.NN.Namespace, k.NN.Name) }

// Version is a content hash of the record.
func (k *Kept) Version() string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00", KeptFormat, k.Kind, k.NN.Namespace, k.NN.Name)
	h.Write(k.Value)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Proto is the record as stored in mesh-compiled, stamped with gen.
func (k *Kept) Proto(gen uint64) *meshv1.KeptVersion {
	return &meshv1.KeptVersion{Kind: k.Kind, Namespace: k.NN.Namespace, Name: k.NN.Name, Format: KeptFormat, Value: k.Value, Generation: gen}
}

// KeptFromProto reads a stored record. It fails on a format other than
// KeptFormat (a record of another release) and on a value that does not
// decode as the accepted form of its kind.
func KeptFromProto(p *meshv1.KeptVersion) (*Kept, error) {
	k := &Kept{Kind: p.GetKind(), NN: model.NN{Namespace: p.GetNamespace(), Name: p.GetName()}, Value: p.GetValue()}
	if p.GetFormat() != KeptFormat {
		return nil, fmt.Errorf("%s %s: kept version of format %d, this compiler reads format %d", k.Kind, k.NN, p.GetFormat(), KeptFormat)
	}
	if err := decodeKept(k.Kind, k.Value); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k.Kind, k.NN, err)
	}
	return k, nil
}

// decodeKept checks that value decodes as the accepted form of kind.
func decodeKept(kind string, value []byte) error {
	var err error
	switch kind {
	case layout.KindHTTPRouteGroup:
		var v map[string]HTTPMatch
		err = json.Unmarshal(value, &v)
	case layout.KindTCPRoute:
		var v TCPMatch
		err = json.Unmarshal(value, &v)
	case layout.KindTrafficTarget:
		var v *Target
		err = json.Unmarshal(value, &v)
	case layout.KindTrafficSplit:
		var v *Split
		err = json.Unmarshal(value, &v)
	case layout.KindRetry:
		var v *policy.AcceptedRetry
		err = json.Unmarshal(value, &v)
	case layout.KindUpstreamTrafficSetting:
		var v *Upstream
		err = json.Unmarshal(value, &v)
	case layout.KindIngressBackend:
		var v *ingressPolicy
		err = json.Unmarshal(value, &v)
	case layout.KindEgress:
		var v *egressPolicy
		err = json.Unmarshal(value, &v)
	default:
		return fmt.Errorf("no accepted version is kept for kind %q", kind)
	}
	if err != nil {
		return fmt.Errorf("decode kept version: %w", err)
	}
	return nil
}

// acceptedOf is the accepted version of the policy object k, if it has one.
func (e *Engine) acceptedOf(k policyKey) (any, bool) {
	nn := k.nn
	switch k.kind {
	case layout.KindHTTPRouteGroup:
		v, ok := e.pol.hrg[nn]
		return v, ok
	case layout.KindTCPRoute:
		v, ok := e.pol.tcp[nn]
		return v, ok
	case layout.KindTrafficTarget:
		v, ok := e.pol.targets[nn]
		return v, ok
	case layout.KindTrafficSplit:
		v, ok := e.pol.splits[nn]
		return v, ok
	case layout.KindRetry:
		v, ok := e.pol.retries.byName[nn]
		return v, ok
	case layout.KindUpstreamTrafficSetting:
		v, ok := e.ups.accepted[nn]
		return v, ok
	case layout.KindIngressBackend:
		v, ok := e.ing.accepted[nn]
		return v, ok
	case layout.KindEgress:
		v, ok := e.egress.accepted[nn]
		return v, ok
	}
	return nil, false
}

// Seed gives the engine kept versions (of a previous compiler, read back
// from mesh-compiled) before a Compile: each object seeded that the next
// Compile rejects is accepted as its seeded version instead of keeping what
// this engine accepted, if anything; one it accepts, or that no longer
// exists, drops its seed. The seeds of an earlier Seed not yet compiled
// are dropped. It reports the records it refused (an unknown kind, a value
// that does not decode), which change nothing.
func (e *Engine) Seed(kept []*Kept) []error {
	var errs []error
	clear(e.pol.seeds)
	for _, k := range kept {
		if err := decodeKept(k.Kind, k.Value); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", k.Kind, k.NN, err))
			continue
		}
		e.pol.seeds[policyKey{k.Kind, k.NN}] = k.Value
		if k.Kind == layout.KindEgress {
			e.egress.changed(k.NN)
		} else {
			e.dirty.policy(k.Kind, k.NN)
		}
	}
	return errs
}

// Kept returns the current kept versions, sorted by key.
func (e *Engine) Kept() []*Kept {
	out := make([]*Kept, 0, len(e.pol.kept))
	for _, k := range e.pol.kept {
		out = append(out, k)
	}
	sortByKey(out)
	return out
}

// recordKept compares the kept version of each policy object reviewed by
// this Compile with the one last reported, and adds the changes to d.
func (e *Engine) recordKept(d *Delta) {
	for k := range e.pol.reviewed {
		var now *Kept
		if e.pol.verdicts[k].GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
			if v, ok := e.acceptedOf(k); ok {
				b, err := json.Marshal(v)
				if err != nil {
					d.Invalid = append(d.Invalid, fmt.Errorf("encode the kept version of %s %s: %w", k.kind, k.nn, err))
				} else {
					now = &Kept{Kind: k.kind, NN: k.nn, Value: b}
				}
			}
		}
		old := e.pol.kept[k]
		switch {
		case now == nil && old != nil:
			delete(e.pol.kept, k)
			d.DeletedKept = append(d.DeletedKept, old.Key())
		case now != nil && (old == nil || !bytes.Equal(old.Value, now.Value)):
			e.pol.kept[k] = now
			d.Kept = append(d.Kept, now)
		}
	}
	e.pol.reviewed = set[policyKey]{} // not clear: a cold compile's buckets would stay
	sortByKey(d.Kept)
	sort.Strings(d.DeletedKept)
}

// ingressPolicyJSON is an ingressPolicy's kept form.
type ingressPolicyJSON struct {
	Backends   []policy.IngressPort
	Services   []model.NN
	IPRanges   []string
	Principals []string
	HTTP       []HTTPMatch
}

// MarshalJSON encodes the kept form.
func (p *ingressPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(ingressPolicyJSON{p.backends, p.services, p.ipRanges, p.principals, p.http})
}

// UnmarshalJSON decodes the kept form.
func (p *ingressPolicy) UnmarshalJSON(b []byte) error {
	var j ingressPolicyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = ingressPolicy{backends: j.Backends, services: j.Services, ipRanges: j.IPRanges, principals: j.Principals, http: j.HTTP}
	return nil
}

// egressPolicyJSON is an egressPolicy's kept form.
type egressPolicyJSON struct {
	Sources  []model.Identity
	Hosts    []string
	IPRanges []string
	Ports    []policy.EgressPort
	HTTP     []HTTPMatch
}

// MarshalJSON encodes the kept form.
func (p *egressPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(egressPolicyJSON{p.sources, p.hosts, p.ipRanges, p.ports, p.http})
}

// UnmarshalJSON decodes the kept form.
func (p *egressPolicy) UnmarshalJSON(b []byte) error {
	var j egressPolicyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = egressPolicy{sources: j.Sources, hosts: j.Hosts, ipRanges: j.IPRanges, ports: j.Ports, http: j.HTTP}
	return nil
}
