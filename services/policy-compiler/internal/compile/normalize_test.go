package compile

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// envoyPath is what Envoy's HTTP connection manager h makes of a
// request's :path, step by step as h enables them, in Envoy's order: the
// fragment never reaches routing; with an escaped-slash action, %2F and %5C
// are unescaped (UNESCAPE_AND_REDIRECT sends the client there); with
// normalize_path, RFC 3986 normalization (percent-encoded unreserved
// characters decoded, backslashes read as slashes, dot segments removed);
// with merge_slashes, repeated slashes merged. Routes match the result
// without its query. It models the documented behaviour, since no Envoy
// runs here.
func envoyPath(h *hcmv3.HttpConnectionManager, raw string) (path string, redirected bool) {
	p, _, _ := strings.Cut(raw, "#")
	p, _, _ = strings.Cut(p, "?")
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		unescaped := strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`).Replace(p)
		redirected = unescaped != p && h.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
		p = unescaped
	}
	if h.GetNormalizePath().GetValue() {
		p = removeDotSegments(strings.ReplaceAll(decodeUnreserved(p), `\`, "/"))
	}
	if h.GetMergeSlashes() {
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
	}
	return p, redirected
}

// decodeUnreserved decodes the percent-encoded unreserved characters
// (ALPHA, DIGIT, "-", ".", "_", "~") of RFC 3986 section 2.3.
func decodeUnreserved(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			v, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
			if c := byte(v); err == nil &&
				(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	var out []string
	segs := strings.Split(in, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	p := strings.Join(out, "/")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// allowedBy returns the name of the first inbound route whose match the
// normalized GET request to path meets and the principals its RBAC allows
// ("" and nil when no route matches: the request gets a 404).
func allowedBy(t *testing.T, vh *routev3.VirtualHost, path string) (string, []string) {
	t.Helper()
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		switch {
		case m.GetSafeRegex() != nil:
			if !regexp.MustCompile(`^(?:` + m.GetSafeRegex().GetRegex() + `)$`).MatchString(path) {
				continue
			}
		case !strings.HasPrefix(path, m.GetPrefix()):
			continue
		}
		methodOK := true
		for _, h := range m.GetHeaders() {
			if h.GetName() == ":method" {
				methodOK = regexp.MustCompile(`^(?:` + h.GetStringMatch().GetSafeRegex().GetRegex() + `)$`).MatchString("GET")
			}
		}
		if !methodOK {
			continue
		}
		per := unpack(t, r.GetTypedPerFilterConfig()[httpRBACFilter], &httprbacv3.RBACPerRoute{})
		var out []string
		for _, ps := range principalsOf(per.GetRbac().GetRules().GetPolicies()) {
			out = append(out, ps...)
		}
		return r.GetName(), out
	}
	return "", nil
}

// TestInboundAuthorizesTheNormalizedPath (fault F14): bookbuyer may GET
// /books/.* on bookstore-v1 and nothing else; every way of spelling a path
// outside it (//, /./, /../, %2F, %5C, a fragment, percent-encoded dots)
// is decided on the normalized path, so none reaches bookstore's /admin.
func TestInboundAuthorizesTheNormalizedPath(t *testing.T) {
	e := newEngine()
	objs := append(synth.Bookstore(false),
		synth.HTTPRouteGroup("bookstore", "catalog", &meshv1.HTTPMatch{Name: "books", PathRegex: "/books/.*", Methods: []string{"GET"}}),
		synth.TrafficTarget("bookstore", "bookbuyer-reads-catalog", "bookstore-v1",
			[]*meshv1.TrafficTargetRule{synth.Rule("HTTPRouteGroup", "catalog", "books")}, synth.Subject("bookbuyer", "bookbuyer")))
	load(t, e, objs)
	filters := inboundChain(t, e, id("bookstore", "bookstore-v1"), 14001)
	hcm := unpack(t, filters[0].GetTypedConfig(), &hcmv3.HttpConnectionManager{})
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
		hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT {
		t.Errorf("inbound HCM normalize_path=%v merge_slashes=%v escaped slashes=%v; want true, true, UNESCAPE_AND_REDIRECT",
			hcm.GetNormalizePath(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction())
	}
	vh := hcm.GetRouteConfig().GetVirtualHosts()[0]
	if d := vh.GetDomains(); len(d) != 1 || d[0] != "*" {
		t.Fatalf("inbound domains = %v, want * (a mixed-case Host cannot pick another virtual host)", d)
	}
	buyer := "spiffe://cluster.local/ns/bookbuyer/sa/bookbuyer"
	cases := []struct {
		raw        string
		normalized string
		allowed    bool
	}{
		{"/books/1", "/books/1", true},
		{"/books/../admin", "/admin", false},
		{"/books/./../admin", "/admin", false},
		{"/books/%2E%2E/admin", "/admin", false},
		{"/books/%2e%2e%2fadmin", "/admin", false},
		{"/books%2F..%2Fadmin", "/admin", false},
		{"/books%5C..%5Cadmin", "/admin", false},
		{"/books/..\\admin", "/admin", false},
		{"//admin", "/admin", false},
		{"/books//1", "/books/1", true},
		{"//books///1", "/books/1", true},
		{"/books/1#/../../admin", "/books/1", true},
		{"/admin#/books/1", "/admin", false},
		{"/admin?/books/1", "/admin", false},
		{"/BOOKS/1", "/BOOKS/1", false},
		{"/books/1/../../books/2", "/books/2", true},
	}
	for _, c := range cases {
		got, redirected := envoyPath(hcm, c.raw)
		if got != c.normalized {
			t.Errorf("%q normalizes to %q, want %q", c.raw, got, c.normalized)
		}
		if strings.Contains(strings.ToLower(c.raw), "%2f") || strings.Contains(strings.ToLower(c.raw), "%5c") {
			if !redirected {
				t.Errorf("%q: escaped slashes must redirect the client to %q", c.raw, got)
			}
		}
		route, principals := allowedBy(t, vh, got)
		allowed := false
		for _, p := range principals {
			allowed = allowed || p == buyer
		}
		if allowed != c.allowed {
			t.Errorf("GET %q (normalized %q) by bookbuyer: route %q allowed=%v, want %v", c.raw, got, route, allowed, c.allowed)
		}
	}
}
