// Package multimap holds the operations on maps of sets and maps of counts
// that the mesh model and the compile core index by: adding and removing a
// member, counting one up or down, and listing the members in order. An
// inner map that empties is removed, so that the length of the outer map is
// the number of keys with members.
package multimap

import "sort"

// Ordered is a key type with its own order.
type Ordered[K any] interface {
	comparable
	Less(K) bool
}

// Sorted lists the keys of m (the members of a set, or the keys counted)
// in the order of their Less method.
func Sorted[K Ordered[K], V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Add adds v to the set under k, creating the set when k has none.
func Add[K, V comparable, S ~map[V]struct{}](mp map[K]S, k K, v V) {
	s := mp[k]
	if s == nil {
		s = S{}
		mp[k] = s
	}
	s[v] = struct{}{}
}

// Remove removes v from the set under k, and k when its set empties.
func Remove[K, V comparable, S ~map[V]struct{}](mp map[K]S, k K, v V) {
	if s := mp[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(mp, k)
		}
	}
}

// Inc counts v under k up by one.
func Inc[K, V comparable](mp map[K]map[V]int, k K, v V) {
	s := mp[k]
	if s == nil {
		s = map[V]int{}
		mp[k] = s
	}
	s[v]++
}

// Dec counts v under k down by n, removing v when its count reaches zero
// and k when it has no counts left.
func Dec[K, V comparable](mp map[K]map[V]int, k K, v V, n int) {
	s := mp[k]
	if s == nil {
		return
	}
	if s[v] -= n; s[v] <= 0 {
		delete(s, v)
	}
	if len(s) == 0 {
		delete(mp, k)
	}
}
