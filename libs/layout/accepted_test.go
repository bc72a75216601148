package layout

import "testing"

// TestAcceptedKey: a kept-version key survives dotted names, is no
// compiled-resource, group or set key (edges refuse it from Stage), and
// no other key is taken for one.
func TestAcceptedKey(t *testing.T) {
	k := AcceptedKey(KindTrafficTarget, "book.store", "a.b")
	if !IsAcceptedKey(k) {
		t.Fatalf("%s is not an accepted key", k)
	}
	if _, err := ParseCompiled(k); err == nil {
		t.Fatalf("ParseCompiled(%s) took it for a compiled key", k)
	}
	for _, other := range []string{ResourceKey(TypeListener, "accepted"), GroupKey("accepted", "x"), SetKey("accepted"), GenerationKey, "accepted.a.b"} {
		if IsAcceptedKey(other) {
			t.Errorf("%s taken for an accepted key", other)
		}
	}
}
