package elect

import (
	"strings"
	"testing"
	"time"
)

func TestConfigErrorsNameTheFlag(t *testing.T) {
	ok := Config{LeaderElect: true, LeaseName: "osm-injector-webhook", LeaseDuration: 15 * time.Second,
		RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second, ReleaseLease: true}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	off := Config{}
	if err := off.Validate(); err != nil {
		t.Fatalf("--leader-elect=false: %v", err)
	}
	for flag, edit := range map[string]func(*Config){
		"--lease-name":     func(c *Config) { c.LeaseName = "" },
		"--retry-period":   func(c *Config) { c.RetryPeriod = 0 },
		"--renew-deadline": func(c *Config) { c.RenewDeadline = c.RetryPeriod },
		"--lease-duration": func(c *Config) { c.LeaseDuration = c.RenewDeadline },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: error %v does not name the flag", flag, err)
		}
	}
	if o := ok.Options(nil, "osm-system", "pod-a", nil); o.Name != ok.LeaseName || o.KeepLeaseOnStop || o.Validate() == nil {
		t.Errorf("options %+v", o) // Validate wants a client
	}
}
