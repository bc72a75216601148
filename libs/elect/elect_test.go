package elect

import (
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

func TestValidate(t *testing.T) {
	client := &kubernetes.Clientset{}
	ok := Options{Client: client, Namespace: "osm-system", Name: "osm-injector-webhook", Identity: "a",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no client", func(o *Options) { o.Client = nil }, "client"},
		{"no lease name", func(o *Options) { o.Name = "" }, "lease namespace and name"},
		{"no identity", func(o *Options) { o.Identity = "" }, "identity"},
		{"lease not above renew", func(o *Options) { o.LeaseDuration = 10 * time.Second }, "must exceed the renew deadline"},
		{"renew too close to retry", func(o *Options) { o.RenewDeadline, o.RetryPeriod = 2*time.Second, 2*time.Second }, "times the retry period"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := ok
			c.edit(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate = %v, want an error about %q", err, c.want)
			}
		})
	}
}
