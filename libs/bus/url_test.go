package bus

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                        "nats://127.0.0.1:4222",
		"nats://edge:s3cret@nats-0.nats:4222":          "nats://redacted@nats-0.nats:4222",
		"tls://tok3n@nats:4222,nats://a:b@nats-1:4222": "tls://redacted@nats:4222,nats://redacted@nats-1:4222",
		"user:hunter2@10.0.0.5:4222":                   "nats://redacted@10.0.0.5:4222",
	} {
		got := RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		for _, secret := range []string{"s3cret", "tok3n", "hunter2", ":b@"} {
			if strings.Contains(got, secret) {
				t.Errorf("RedactURL(%q) = %q keeps %q", in, got, secret)
			}
		}
	}
}

func TestCheckTransportRefusesPlaintextCredentialsOffHost(t *testing.T) {
	refused := []Options{
		{URL: "nats://nats.osm-system:4222", User: "edge", Password: "pw"},
		{URL: "nats://127.0.0.1:4222,nats://10.0.0.5:4222", Token: "tok"},
		{URL: "nats-0.nats:4222", User: "edge", Password: "pw"},
		{URL: "nats://edge:pw@nats:4222"},
		{URL: "ws://nats:8080", Token: "tok"},
	}
	for _, o := range refused {
		err := o.CheckTransport()
		if err == nil || !strings.Contains(err.Error(), "in the clear") {
			t.Errorf("%q: err = %v, want a refusal", o.URL, err)
		} else if strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "tok") {
			t.Errorf("%q: the error shows the secret: %v", o.URL, err)
		}
	}
	allowed := []Options{
		{URL: "nats://127.0.0.1:4222", User: "edge", Password: "pw"},
		{URL: "nats://localhost:4222", Token: "tok"},
		{URL: "nats://[::1]:4222", User: "edge", Password: "pw"},
		{URL: "tls://nats.osm-system:4222", User: "edge", Password: "pw"},
		{URL: "nats://nats.osm-system:4222", User: "edge", Password: "pw", CAFile: "/ca.pem"},
		{URL: "nats://nats.osm-system:4222", CredsFile: "/edge.creds"},
		{URL: "nats://nats.osm-system:4222"},
	}
	for _, o := range allowed {
		if err := o.CheckTransport(); err != nil {
			t.Errorf("%q: %v, want allowed", o.URL, err)
		}
	}
}
