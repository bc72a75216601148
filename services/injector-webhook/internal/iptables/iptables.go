// Package iptables generates the traffic-redirection rules the injector's
// init container installs in a meshed pod: every TCP connection the app
// makes goes to the sidecar's outbound listener, and every TCP connection to
// the pod goes to its inbound listener, except for the sidecar's own traffic
// and the ports and ranges the user excludes. The rules are produced by one
// pure function in iptables-restore format, so they can be golden-tested.
package iptables

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Chain names, prefixed so they never clash with the user's.
const (
	chainInbound         = "OSM_PROXY_INBOUND"
	chainInboundRedirect = "OSM_PROXY_IN_REDIRECT"
	chainOutput          = "OSM_PROXY_OUTPUT"
	chainRedirect        = "OSM_PROXY_REDIRECT"
)

// Config is what the rules depend on.
type Config struct {
	// ProxyUID is the user the sidecar runs as; its own traffic is never
	// redirected.
	ProxyUID int64
	// OutboundPort and InboundPort are the sidecar's listeners.
	OutboundPort, InboundPort int
	// BypassInboundPorts are sidecar ports reached directly, not through
	// the inbound listener: the metrics and health-probe listeners.
	BypassInboundPorts []int
	// OutboundPortExclusions are destination ports the app reaches directly.
	OutboundPortExclusions []int
	// InboundPortExclusions are pod ports reached directly, bypassing the sidecar.
	InboundPortExclusions []int
	// OutboundIPRangeExclusions are CIDRs the app reaches directly.
	OutboundIPRangeExclusions []string
	// OutboundIPRangeInclusions, when not empty, limit redirection to these
	// CIDRs: everything else is reached directly.
	OutboundIPRangeInclusions []string
}

// FieldError names the configuration field that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func checkPort(field string, p int) error {
	if p < 1 || p > 65535 {
		return &FieldError{field, fmt.Sprintf("port %d is outside 1-65535", p)}
	}
	return nil
}

func checkPorts(field string, ports []int) error {
	for i, p := range ports {
		if err := checkPort(fmt.Sprintf("%s[%d]", field, i), p); err != nil {
			return err
		}
	}
	return nil
}

func cidrs(field string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for i, s := range in {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, &FieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not a CIDR such as 10.0.0.0/8", s)}
		}
		if !p.Addr().Is4() {
			// The init container programs iptables (IPv4); IPv6 needs ip6tables.
			return nil, &FieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not an IPv4 range", s)}
		}
		out = append(out, p.Masked().String())
	}
	return out, nil
}

// Validate checks c and returns a *FieldError naming the bad field.
func (c Config) Validate() error {
	if c.ProxyUID <= 0 {
		return &FieldError{"proxyUID", fmt.Sprintf("%d must be a positive user id", c.ProxyUID)}
	}
	for _, f := range []struct {
		name string
		p    int
	}{{"outboundPort", c.OutboundPort}, {"inboundPort", c.InboundPort}} {
		if err := checkPort(f.name, f.p); err != nil {
			return err
		}
	}
	if c.OutboundPort == c.InboundPort {
		return &FieldError{"inboundPort", "must differ from outboundPort"}
	}
	for _, f := range []struct {
		name  string
		ports []int
	}{
		{"bypassInboundPorts", c.BypassInboundPorts},
		{"outboundPortExclusionList", c.OutboundPortExclusions},
		{"inboundPortExclusionList", c.InboundPortExclusions},
	} {
		if err := checkPorts(f.name, f.ports); err != nil {
			return err
		}
	}
	if _, err := cidrs("outboundIPRangeExclusionList", c.OutboundIPRangeExclusions); err != nil {
		return err
	}
	if _, err := cidrs("outboundIPRangeInclusionList", c.OutboundIPRangeInclusions); err != nil {
		return err
	}
	return nil
}

// Rules returns the nat-table rules in iptables-restore format. Equal
// configurations give byte-identical output: lists are sorted and
// de-duplicated.
func Rules(c Config) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	excl, _ := cidrs("outboundIPRangeExclusionList", c.OutboundIPRangeExclusions)
	incl, _ := cidrs("outboundIPRangeInclusionList", c.OutboundIPRangeInclusions)
	var b strings.Builder
	add := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	add("*nat")
	for _, ch := range []string{chainInbound, chainInboundRedirect, chainOutput, chainRedirect} {
		add(":%s - [0:0]", ch)
	}
	// Inbound: everything to the pod goes to the inbound listener, except
	// the sidecar's own listeners and the excluded ports.
	add("-A PREROUTING -p tcp -j %s", chainInbound)
	for _, ports := range multiports(uniqueSorted(c.BypassInboundPorts)) {
		add("-A %s -p tcp -m multiport --dports %s -j RETURN", chainInbound, ports)
	}
	for _, ports := range multiports(uniqueSorted(c.InboundPortExclusions)) {
		add("-A %s -p tcp -m multiport --dports %s -j RETURN", chainInbound, ports)
	}
	add("-A %s -p tcp -j %s", chainInbound, chainInboundRedirect)
	add("-A %s -p tcp -j REDIRECT --to-port %d", chainInboundRedirect, c.InboundPort)

	// Outbound.
	add("-A OUTPUT -p tcp -j %s", chainOutput)
	// When the sidecar forwards the app's call to a service the pod itself
	// backs, the connection to the pod's own IP leaves on lo: send it back
	// in through the inbound listener, so inbound policy applies to it.
	add("-A %s -o lo ! -d 127.0.0.1/32 -m owner --uid-owner %d -j %s", chainOutput, c.ProxyUID, chainInboundRedirect)
	// The sidecar's own connections and loopback traffic are left alone.
	add("-A %s -m owner --uid-owner %d -j RETURN", chainOutput, c.ProxyUID)
	add("-A %s -d 127.0.0.1/32 -j RETURN", chainOutput)
	for _, ports := range multiports(uniqueSorted(c.OutboundPortExclusions)) {
		add("-A %s -p tcp -m multiport --dports %s -j RETURN", chainOutput, ports)
	}
	for _, cidr := range uniqueSorted(excl) {
		add("-A %s -d %s -j RETURN", chainOutput, cidr)
	}
	if inc := uniqueSorted(incl); len(inc) > 0 {
		for _, cidr := range inc {
			add("-A %s -d %s -j %s", chainOutput, cidr, chainRedirect)
		}
		add("-A %s -j RETURN", chainOutput)
	} else {
		add("-A %s -j %s", chainOutput, chainRedirect)
	}
	add("-A %s -p tcp -j REDIRECT --to-port %d", chainRedirect, c.OutboundPort)
	add("COMMIT")
	return b.String(), nil
}

// multiports splits ports into comma-separated groups of at most 15, the
// limit of the iptables multiport match.
func multiports(ports []int) []string {
	var out []string
	for len(ports) > 0 {
		n := min(len(ports), 15)
		s := make([]string, n)
		for i, p := range ports[:n] {
			s[i] = strconv.Itoa(p)
		}
		out = append(out, strings.Join(s, ","))
		ports = ports[n:]
	}
	return out
}

// uniqueSorted returns a sorted copy of in without duplicates.
func uniqueSorted[T cmp.Ordered](in []T) []T {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}
