package service

import (
	"strings"
	"testing"
	"time"
)

func TestSecretsConfigErrorsNameTheFlag(t *testing.T) {
	ok := SecretsConfig{Writers: 4, QueueSize: 1024, OwnerWait: 30 * time.Second, MissingGrace: 30 * time.Second, OrphanGrace: 5 * time.Minute}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := []struct {
		flag string
		edit func(*SecretsConfig)
	}{
		{"--bootstrap-writers", func(c *SecretsConfig) { c.Writers = 0 }},
		{"--bootstrap-queue-size", func(c *SecretsConfig) { c.QueueSize = 0 }},
		{"--bootstrap-missing-grace", func(c *SecretsConfig) { c.MissingGrace = 0 }},
		{"--bootstrap-owner-wait", func(c *SecretsConfig) { c.OwnerWait = -time.Second }},
		// 0 used to write Secrets before their pod existed.
		{"--bootstrap-owner-wait", func(c *SecretsConfig) { c.OwnerWait = 0 }},
		{"--bootstrap-owner-wait", func(c *SecretsConfig) { c.OwnerWait = time.Minute }},
		{"--bootstrap-orphan-grace", func(c *SecretsConfig) { c.OrphanGrace = 500 * time.Millisecond }},
	}
	for _, tc := range cases {
		c := ok
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%s: error %v does not name the flag", tc.flag, err)
		}
	}
}
