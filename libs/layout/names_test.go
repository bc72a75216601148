package layout

import "testing"

func TestKindNamesRoundTrip(t *testing.T) {
	for key := range kindDisplay {
		if got := KindKey(KindName(key)); got != key {
			t.Errorf("KindKey(KindName(%q)) = %q", key, got)
		}
		if NewObserved(key) == nil {
			t.Errorf("kind %q has no observed message type", key)
		}
	}
	if got := KindName("nosuchkind"); got != "nosuchkind" {
		t.Errorf("unknown kind: %q", got)
	}
}

func TestStatusSubjects(t *testing.T) {
	if got, want := PolicyStatusSubject("TrafficTarget", "book.store", "tt"), "mesh.status.policy.traffictarget.book_2Estore.tt"; got != want {
		t.Errorf("policy subject %q, want %q", got, want)
	}
	if got, want := ProxyStatusSubject("edge-1", "a.b"), "mesh.status.proxy.edge-1.a_2Eb"; got != want {
		t.Errorf("proxy subject %q, want %q", got, want)
	}
}
