package xds

import "sync"

// maxNackMemo bounds the (proxy, type) pairs the memo keeps; past it, the
// memo starts over (a proxy then gets a rejected version once more on its
// next stream, and rejects it again).
const maxNackMemo = 1 << 16

// nackMemo remembers what each proxy rejected, across its streams on this
// edge: a stream's own record (typeState.nackedVersion, typeState.nacked)
// ends with the stream, and a proxy that reconnects (every
// --max-connection-age, or after a network blip) would otherwise be sent
// the version it rejected again, and reject it again, until the compiler
// writes a new one (fault F12: no resend until a new version). A proxy is
// its identity and node id, so that a proxy can speak only for proxies of
// its own identity. Delta resources are remembered by their version
// (pool.Resource.Version: generation and content hash), not by their
// revision, which a name freed and made again would start over.
type nackMemo struct {
	mu sync.Mutex
	m  map[nackKey]*nackRecord
}

type nackKey struct{ identity, node, typeURL string }

// nackRecord is what one proxy rejected of one type.
type nackRecord struct {
	version  string            // state of the world: the version_info rejected
	versions map[string]string // delta: the resource version rejected, by name
}

// record returns the record of k, made if absent. n.mu is held.
func (n *nackMemo) record(k nackKey) *nackRecord {
	if n.m == nil || len(n.m) >= maxNackMemo {
		n.m = map[nackKey]*nackRecord{}
	}
	r := n.m[k]
	if r == nil {
		r = &nackRecord{}
		n.m[k] = r
	}
	return r
}

// rememberVersion records a rejected state-of-the-world version.
func (n *nackMemo) rememberVersion(k nackKey, version string) {
	if k.node == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record(k).version = version
}

// forgetVersion drops k's rejected state-of-the-world version: the proxy
// accepted a later one.
func (n *nackMemo) forgetVersion(k nackKey) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.m[k]; r != nil {
		r.version = ""
		if len(r.versions) == 0 {
			delete(n.m, k)
		}
	}
}

// version is the state-of-the-world version k rejected, "" if none.
func (n *nackMemo) version(k nackKey) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.m[k]; r != nil {
		return r.version
	}
	return ""
}

// rememberResource records a rejected delta resource version of name.
func (n *nackMemo) rememberResource(k nackKey, name, version string) {
	if k.node == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.record(k)
	if r.versions == nil {
		r.versions = map[string]string{}
	}
	r.versions[name] = version
}

// resources calls f with each name and resource version k rejected.
func (n *nackMemo) resources(k nackKey, f func(name, version string)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.m[k]; r != nil {
		for name, v := range r.versions {
			f(name, v)
		}
	}
}

// nackKeyOf is the memo key of c's proxy for typeURL. c.mu is held.
func nackKeyOf(c *conn, typeURL string) nackKey {
	return nackKey{identity: c.id.String(), node: c.nodeID, typeURL: typeURL}
}
