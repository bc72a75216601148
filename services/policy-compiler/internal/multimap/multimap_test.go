package multimap

import (
	"maps"
	"slices"
	"testing"
)

func TestAddRemove(t *testing.T) {
	type set map[string]struct{}
	mp := map[int]set{}
	Add(mp, 1, "a")
	Add(mp, 1, "b")
	Add(mp, 2, "a")
	if len(mp) != 2 || len(mp[1]) != 2 || len(mp[2]) != 1 {
		t.Fatalf("after adds: %v", mp)
	}
	Remove(mp, 1, "a")
	Remove(mp, 2, "a")
	Remove(mp, 3, "a") // absent key: no effect
	if want := map[int]set{1: {"b": {}}}; !maps.EqualFunc(mp, want, func(a, b set) bool { return maps.Equal(a, b) }) {
		t.Errorf("after removes: %v, want %v", mp, want)
	}
}

// key is an ordered key: by b, then a.
type key struct{ a, b int }

func (k key) Less(o key) bool { return k.b < o.b || (k.b == o.b && k.a < o.a) }

func TestSorted(t *testing.T) {
	m := map[key]int{{1, 2}: 0, {2, 1}: 0, {1, 1}: 0, {0, 3}: 0}
	want := []key{{1, 1}, {2, 1}, {1, 2}, {0, 3}}
	if got := Sorted(m); !slices.Equal(got, want) {
		t.Errorf("Sorted = %v, want %v", got, want)
	}
	if got := Sorted(map[key]struct{}(nil)); len(got) != 0 {
		t.Errorf("Sorted(nil) = %v, want none", got)
	}
}

func TestIncDec(t *testing.T) {
	mp := map[string]map[string]int{}
	Inc(mp, "k", "a")
	Inc(mp, "k", "a")
	Inc(mp, "k", "b")
	Dec(mp, "k", "a", 1)
	if mp["k"]["a"] != 1 || mp["k"]["b"] != 1 {
		t.Fatalf("after one dec: %v", mp)
	}
	Dec(mp, "k", "a", 5) // below zero: removed
	if _, ok := mp["k"]["a"]; ok {
		t.Errorf("a still counted: %v", mp)
	}
	Dec(mp, "k", "b", 1)
	Dec(mp, "x", "b", 1) // absent key: no effect
	if len(mp) != 0 {
		t.Errorf("empty counts kept: %v", mp)
	}
}
