package bus_test

import (
	"github.com/openservicemesh/osm/libs/bus"
	"regexp"
	"strings"
	"testing"
)

// validKey is the key syntax the NATS KV accepts (nats.go keyValid).
var validKey = regexp.MustCompile(`^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$`)

func TestKeyExamples(t *testing.T) {
	cases := []struct {
		parts []string
		want  string
	}{
		{[]string{"service", "bookstore", "bookstore-v1"}, "service.bookstore.bookstore-v1"},
		{[]string{"service", "bookstore", "bookstore.v1"}, "service.bookstore.bookstore_2Ev1"},
		{[]string{"cluster", "bookstore/bookstore|14001"}, "cluster.bookstore/bookstore_7C14001"},
		{[]string{"a_b", ""}, "a_5Fb.="},
		{[]string{"*", ">"}, "_2A._3E"},
	}
	for _, c := range cases {
		got := bus.Key(c.parts...)
		if got != c.want {
			t.Errorf("Key(%q) = %q, want %q", c.parts, got, c.want)
		}
		back, err := bus.SplitKey(got)
		if err != nil {
			t.Fatalf("SplitKey(%q): %v", got, err)
		}
		if strings.Join(back, "\x00") != strings.Join(c.parts, "\x00") {
			t.Errorf("SplitKey(%q) = %q, want %q", got, back, c.parts)
		}
	}
}

func TestUnescapeRejects(t *testing.T) {
	for _, tok := range []string{"", "a.b", "_", "_2", "_zz", "_41", "a*", "_2e"} {
		if _, err := bus.UnescapeToken(tok); err == nil {
			t.Errorf("UnescapeToken(%q) accepted a malformed token", tok)
		}
	}
}

func FuzzKeyRoundTrip(f *testing.F) {
	f.Add("bookstore", "bookstore.v1")
	f.Add("", "_2E")
	f.Add("ns/svc|80", "type.googleapis.com/envoy.config.cluster.v3.Cluster")
	f.Add("\x00\xff", "=")
	f.Fuzz(func(t *testing.T, a, b string) {
		key := bus.Key(a, b)
		if !validKey.MatchString(key) || !bus.ValidKey(key) {
			t.Fatalf("Key(%q, %q) = %q is not a valid NATS KV key", a, b, key)
		}
		parts, err := bus.SplitKey(key)
		if err != nil {
			t.Fatalf("SplitKey(%q): %v", key, err)
		}
		if len(parts) != 2 || parts[0] != a || parts[1] != b {
			t.Fatalf("round trip of (%q, %q) gave %q", a, b, parts)
		}
		// One spelling per string: unescaping then escaping a token is the identity.
		for _, tok := range strings.Split(key, ".") {
			s, _ := bus.UnescapeToken(tok)
			if bus.EscapeToken(s) != tok {
				t.Fatalf("token %q has a second spelling", tok)
			}
		}
	})
}
