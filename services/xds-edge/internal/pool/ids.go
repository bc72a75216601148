package pool

import (
	"sync"
	"sync/atomic"
)

// ID is a small number standing for one resource name of one type, so that
// a stream keeps what its proxy subscribed to and holds as a few bytes per
// name: strings and maps per stream would dominate the edge's memory at a
// thousand names per proxy and ten thousand proxies.
//
// Every resource the pool holds has an ID (Resource.ID). A stream that
// refers to a name the pool does not hold (a subscription to a resource not
// compiled yet, a secret) acquires an ID for it. An ID names the same
// resource for as long as the pool holds the resource or a stream holds a
// reference; after that it may be reused for another name.
type ID uint32

// Revisions (Resource.Rev) say which content of a name a stream holds, in
// four bytes instead of a version string.
const (
	// RevNone: the stream holds nothing under the name.
	RevNone uint32 = 0
	// RevUnknown: the proxy holds a version this edge did not make or no
	// longer has (from initial_resource_versions); any current content is
	// newer.
	RevUnknown uint32 = 1
	// firstRev is the first revision a resource gets.
	firstRev uint32 = 2
)

// slot is one ID's entry.
type slot struct {
	key resKey
	// rev is the last revision given out under this ID. It is kept when the
	// ID is freed and reused, so an (ID, revision) pair is never given to
	// two contents: a stale pair (a late NACK, a rejected version) never
	// matches anything current.
	rev uint32
	// refs counts stream references; the slot is freed when it has none
	// and the pool holds no resource under it.
	refs atomic.Int32
	used bool
}

// ids is the pool's ID table. IDs are made and freed only by the pool's
// writer (Commit, Acquire: the owner holds its write lock); references are
// counted atomically so that streams may add and drop them while holding
// only a read lock. A reference dropped to zero under a read lock is queued
// (orphans) and the slot freed by the next writer.
type ids struct {
	byKey map[resKey]ID
	slots []slot
	free  []ID

	orphanMu sync.Mutex
	orphans  []ID
}

// idOf returns the ID of k, making one if needed. Writer only.
func (t *ids) idOf(k resKey) ID {
	if id, ok := t.byKey[k]; ok {
		return id
	}
	var id ID
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
	} else {
		t.slots = append(t.slots, slot{})
		id = ID(len(t.slots) - 1)
	}
	s := &t.slots[id]
	s.key, s.used = k, true
	if t.byKey == nil {
		t.byKey = map[resKey]ID{}
	}
	t.byKey[k] = id
	return id
}

// nextRev gives the next revision of id.
func (t *ids) nextRev(id ID) uint32 {
	s := &t.slots[id]
	s.rev = max(s.rev+1, firstRev) // never RevNone or RevUnknown, also after wrapping
	return s.rev
}

// release frees id when no stream refers to it and held says the pool holds
// no resource under it. Writer only.
func (t *ids) release(id ID, held bool) {
	s := &t.slots[id]
	if !s.used || held || s.refs.Load() > 0 {
		return
	}
	delete(t.byKey, s.key)
	s.key, s.used = resKey{}, false
	t.free = append(t.free, id)
}

// ID returns the ID of typeURL/name, if it has one.
func (p *Pool) ID(typeURL, name string) (ID, bool) {
	id, ok := p.ids.byKey[resKey{typeURL, name}]
	return id, ok
}

// Key returns the type and name behind id ("", "" for a free ID).
func (p *Pool) Key(id ID) (typeURL, name string) {
	if int(id) >= len(p.ids.slots) {
		return "", ""
	}
	k := p.ids.slots[id].key
	return k.typeURL, k.name
}

// NewRev returns a new revision of id, for content its owner keeps outside
// the pool (the edge's secrets) under an ID it acquired. Writer only.
func (p *Pool) NewRev(id ID) uint32 { return p.ids.nextRev(id) }

// Acquire returns the ID of typeURL/name with one more stream reference,
// making the ID if needed. Writer only: the owner holds its write lock.
func (p *Pool) Acquire(typeURL, name string) ID {
	id := p.ids.idOf(resKey{typeURL, name})
	p.ids.slots[id].refs.Add(1)
	return id
}

// Ref adds a stream reference to id, which must be in use (a resource the
// pool holds, or an ID the caller already refers to). Safe under the
// owner's read lock.
func (p *Pool) Ref(id ID) { p.ids.slots[id].refs.Add(1) }

// Unref drops a stream reference to id. Safe under the owner's read lock:
// an ID left without references is freed by the next writer.
func (p *Pool) Unref(id ID) {
	if p.ids.slots[id].refs.Add(-1) > 0 {
		return
	}
	p.ids.orphanMu.Lock()
	p.ids.orphans = append(p.ids.orphans, id)
	p.ids.orphanMu.Unlock()
}

// Collect frees the IDs whose last reference was dropped and whose resource
// the pool no longer holds. Writer only; Commit does it too.
func (p *Pool) Collect() {
	p.ids.orphanMu.Lock()
	orphans := p.ids.orphans
	p.ids.orphans = nil
	p.ids.orphanMu.Unlock()
	for _, id := range orphans {
		p.ids.release(id, p.holds(p.ids.slots[id].key))
	}
}

// IDs is the number of IDs in use (resources held plus names streams refer
// to that the pool does not hold).
func (p *Pool) IDs() int { return len(p.ids.byKey) }
