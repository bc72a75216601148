package iptables

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func base() Config {
	return Config{ProxyUID: 1500, OutboundPort: 15001, InboundPort: 15003, BypassInboundPorts: []int{15010, 15901, 15902, 15903}}
}

func TestGolden(t *testing.T) {
	many := base()
	for p := 1000; p < 1020; p++ {
		many.OutboundPortExclusions = append(many.OutboundPortExclusions, p)
	}
	cases := map[string]Config{
		"default": base(),
		"exclusions": func() Config {
			c := base()
			c.OutboundPortExclusions = []int{6379, 3306, 6379}
			c.InboundPortExclusions = []int{9090}
			c.OutboundIPRangeExclusions = []string{"169.254.169.254/32", "10.96.0.1/12"}
			return c
		}(),
		"inclusions": func() Config {
			c := base()
			c.OutboundIPRangeInclusions = []string{"10.0.0.0/8", "192.168.0.0/16"}
			return c
		}(),
		"many-ports": many,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Rules(c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".rules")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rules differ from %s:\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	cases := map[string]func(*Config){
		"outboundPortExclusionList[1]":    func(c *Config) { c.OutboundPortExclusions = []int{80, 70000} },
		"inboundPortExclusionList[0]":     func(c *Config) { c.InboundPortExclusions = []int{0} },
		"outboundIPRangeExclusionList[0]": func(c *Config) { c.OutboundIPRangeExclusions = []string{"10.0.0/8"} },
		"outboundIPRangeInclusionList[0]": func(c *Config) { c.OutboundIPRangeInclusions = []string{"fd00::/8"} },
		"proxyUID":                        func(c *Config) { c.ProxyUID = 0 },
		"inboundPort":                     func(c *Config) { c.InboundPort = c.OutboundPort },
	}
	for field, mutate := range cases {
		c := base()
		mutate(&c)
		_, err := Rules(c)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: err = %v, want a FieldError for %s", field, err, field)
		}
	}
}
