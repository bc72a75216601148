package bus

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// RedactURL returns the comma-separated server URLs with any user
// information (user:password@ or token@) replaced, for logs and errors.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if p, err := url.Parse(withScheme(strings.TrimSpace(u))); err == nil && p.User != nil {
			p.User = url.User("redacted")
			parts[i] = p.String()
		} else if err != nil && strings.Contains(u, "@") {
			parts[i] = "redacted@" + u[strings.LastIndex(u, "@")+1:]
		}
	}
	return strings.Join(parts, ",")
}

// CheckTransport refuses options that would send a password or a token in
// the clear to a server that is not on this host: a nats:// or ws:// URL
// (not tls:// or wss://), with no CA or client certificate to force TLS, to
// a host other than localhost or a loopback address. A credentials file is
// not sent (its key signs the server's nonce), so it passes.
func (o Options) CheckTransport() error {
	if o.CAFile != "" || o.CertFile != "" {
		return nil // nats.Secure: every connection is TLS
	}
	secret := o.Password != "" || o.Token != ""
	for _, raw := range strings.Split(o.URL, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(withScheme(raw))
		if err != nil {
			return fmt.Errorf("server URL %q: %v", RedactURL(raw), err)
		}
		if u.Scheme != "nats" && u.Scheme != "ws" {
			continue
		}
		if !secret && u.User == nil {
			continue
		}
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("would send the NATS credentials in the clear to %s; use a tls:// URL or give --nats-ca", RedactURL(raw))
		}
	}
	return nil
}

// withScheme adds nats:// to a bare host:port, as the NATS client does.
func withScheme(u string) string {
	if strings.Contains(u, "://") {
		return u
	}
	return "nats://" + u
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
