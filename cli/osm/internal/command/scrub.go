package command

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"regexp"
	"strings"
)

// The scrub's rules, as the bug-report's README counts them.
const (
	rulePEMKey    = "pem-private-key"
	ruleBase64Key = "encoded-private-key"
	ruleJWT       = "jwt"
	ruleField     = "secret-field"
	ruleURL       = "url-password"
	ruleAuth      = "authorization-header"
)

// The markers that replace what the scrub removed: plain words, so that
// the YAML and JSON files stay parseable.
const (
	redactedKey   = "REDACTED-PRIVATE-KEY"
	redactedToken = "REDACTED-TOKEN"
	redacted      = "REDACTED"
)

// sensitiveName: a field, annotation, label or environment variable name
// whose value is a secret (it ends with one of these words).
var sensitiveName = regexp.MustCompile(`(?i)(password|passwd|passphrase|token|secret|credentials?|api[_-]?key|private[_-]?key|bearer|\.key)$`)

// harmless are values that are never a secret, whatever their field's
// name: automountServiceAccountToken: true, an empty value, one already
// redacted.
var harmless = regexp.MustCompile(`^(["']?)(true|false|null|~|\d+|REDACTED(-[A-Z-]+)?)?(["']?),?$`)

var (
	pemKeyRE     = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----`)
	pemKeyOpenRE = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[A-Za-z0-9+/=\s\\]*`)
	jwtRE        = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*`)
	base64RunRE  = regexp.MustCompile(`[A-Za-z0-9+/_-]{64,}={0,2}`)
	// "name": "value" in JSON, the name sensitive.
	jsonFieldRE = regexp.MustCompile(`("([^"\\\n]*)"\s*:\s*)"((?:[^"\\\n]|\\.)*)"`)
	// "name": "OSM_NATS_PASSWORD", "value": "..." in JSON (an env var).
	jsonEnvRE = regexp.MustCompile(`("name"\s*:\s*"([^"\\\n]*)"\s*,\s*"value"\s*:\s*)"((?:[^"\\\n]|\\.)*)"`)
	// name: value, name = value, the start of a line (YAML, text).
	lineFieldRE = regexp.MustCompile(`^(\s*(?:-\s+)?["']?([\w./-]+)["']?\s*[:=]\s*)(\S.*)$`)
	// name=value inside a line (a message, a command line).
	inlineFieldRE = regexp.MustCompile(`(?i)\b([\w.-]*(?:password|passwd|token|secret|api[_-]?key))(=|:\s*)("[^"\n]*"|'[^'\n]*'|[^\s&"',;]+)`)
	urlPasswordRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@"']+:)([^@\s/"']+)@`)
	authHeaderRE  = regexp.MustCompile(`(?i)(authorization["']?\s*[:=]\s*["']?(?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]+)`)
	yamlEnvNameRE = regexp.MustCompile(`^\s*(?:-\s+)?name:\s*["']?([\w.-]+)["']?\s*$`)
	yamlValueRE   = regexp.MustCompile(`^(\s*value:\s*)(\S.*)$`)
)

// scrubber removes secrets from the bug-report's files and counts what it
// removed, by rule.
type scrubber struct {
	counts map[string]int
}

func newScrubber() *scrubber { return &scrubber{counts: map[string]int{}} }

// text scrubs a file's content: private keys (PEM, and base64 of PEM or
// DER), JWTs, the values of fields named like a secret (JSON, YAML and
// name=value text), passwords in URLs and Authorization headers.
func (s *scrubber) text(b []byte) []byte {
	str := string(b)
	str = s.replace(str, pemKeyRE, rulePEMKey, func(string) string { return redactedKey })
	str = s.replace(str, pemKeyOpenRE, rulePEMKey, func(string) string { return redactedKey })
	str = s.replace(str, jwtRE, ruleJWT, func(string) string { return redactedToken })
	str = s.replace(str, base64RunRE, ruleBase64Key, func(m string) string {
		if encodedKey(m) {
			return redactedKey
		}
		return m
	})
	str = s.replaceSub(str, jsonEnvRE, ruleField, func(sub []string) string {
		if sensitiveName.MatchString(sub[2]) && !harmless.MatchString(sub[3]) {
			return sub[1] + `"` + redacted + `"`
		}
		return sub[0]
	})
	str = s.replaceSub(str, jsonFieldRE, ruleField, func(sub []string) string {
		if sensitiveName.MatchString(sub[2]) && !harmless.MatchString(sub[3]) {
			return sub[1] + `"` + redacted + `"`
		}
		return sub[0]
	})
	str = s.lines(str)
	str = s.replaceSub(str, inlineFieldRE, ruleField, func(sub []string) string {
		if harmless.MatchString(sub[3]) || strings.HasPrefix(strings.Trim(sub[3], `"'`), redacted) {
			return sub[0]
		}
		return sub[1] + sub[2] + redacted
	})
	str = s.replaceSub(str, urlPasswordRE, ruleURL, func(sub []string) string {
		if sub[2] == redacted {
			return sub[0]
		}
		return sub[1] + redacted + "@"
	})
	str = s.replaceSub(str, authHeaderRE, ruleAuth, func(sub []string) string {
		if strings.HasPrefix(sub[2], redacted) {
			return sub[0]
		}
		return sub[1] + redacted
	})
	return []byte(str)
}

// lines scrubs line by line: "name: value" with a sensitive name (and a
// block scalar under it), and an environment variable's value under a
// sensitive "name:" in YAML.
func (s *scrubber) lines(str string) string {
	ls := strings.Split(str, "\n")
	for i := 0; i < len(ls); i++ {
		l := ls[i]
		if m := yamlEnvNameRE.FindStringSubmatch(l); m != nil && sensitiveName.MatchString(m[1]) && i+1 < len(ls) {
			if v := yamlValueRE.FindStringSubmatch(ls[i+1]); v != nil && !harmless.MatchString(v[2]) {
				ls[i+1] = v[1] + redacted
				s.counts[ruleField]++
				i++
			}
			continue
		}
		m := lineFieldRE.FindStringSubmatch(l)
		if m == nil || !sensitiveName.MatchString(m[2]) || harmless.MatchString(m[3]) {
			continue
		}
		if strings.Contains(m[3], redacted) {
			continue // jsonFieldRE's already
		}
		ls[i] = m[1] + redacted
		s.counts[ruleField]++
		if m[3] == "|" || m[3] == ">" || strings.HasPrefix(m[3], "|") || strings.HasPrefix(m[3], ">") {
			// A block scalar: its more-indented lines go too.
			indent := len(l) - len(strings.TrimLeft(l, " "))
			j := i + 1
			for j < len(ls) && (strings.TrimSpace(ls[j]) == "" || len(ls[j])-len(strings.TrimLeft(ls[j], " ")) > indent) {
				j++
			}
			ls = append(ls[:i+1], ls[j:]...)
		}
	}
	return strings.Join(ls, "\n")
}

func (s *scrubber) replace(str string, re *regexp.Regexp, rule string, with func(string) string) string {
	return re.ReplaceAllStringFunc(str, func(m string) string {
		out := with(m)
		if out != m {
			s.counts[rule]++
		}
		return out
	})
}

func (s *scrubber) replaceSub(str string, re *regexp.Regexp, rule string, with func([]string) string) string {
	return re.ReplaceAllStringFunc(str, func(m string) string {
		out := with(re.FindStringSubmatch(m))
		if out != m {
			s.counts[rule]++
		}
		return out
	})
}

// encodedKey: a base64 (standard or URL) run that decodes to a PEM
// private key or parses as a DER private key.
func encodedKey(run string) bool {
	trimmed := strings.TrimRight(run, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(trimmed)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) || derKey(b) {
			return true
		}
	}
	return false
}

// derKey: b is a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key.
func derKey(b []byte) bool {
	if len(b) < 32 || b[0] != 0x30 { // an ASN.1 SEQUENCE
		return false
	}
	if _, err := x509.ParsePKCS8PrivateKey(b); err == nil {
		return true
	}
	if _, err := x509.ParseECPrivateKey(b); err == nil {
		return true
	}
	_, err := x509.ParsePKCS1PrivateKey(b)
	return err == nil
}

// scrubObject removes what an object must not carry into the bug-report:
// its managedFields and last-applied-configuration annotation (copies of
// the object, noise at best), and the value of every field, annotation,
// label and environment variable named like a secret. It counts the
// values under ruleField.
func (s *scrubber) scrubObject(obj map[string]any) {
	if md, ok := obj["metadata"].(map[string]any); ok {
		delete(md, "managedFields")
		if a, ok := md["annotations"].(map[string]any); ok {
			delete(a, "kubectl.kubernetes.io/last-applied-configuration")
		}
	}
	s.walk(obj)
}

func (s *scrubber) walk(v any) {
	switch v := v.(type) {
	case map[string]any:
		// an environment variable {name, value}
		if n, ok := v["name"].(string); ok && sensitiveName.MatchString(n) {
			if val, ok := v["value"].(string); ok && !harmless.MatchString(val) {
				v["value"] = redacted
				s.counts[ruleField]++
			}
		}
		for k, e := range v {
			if str, ok := e.(string); ok && sensitiveName.MatchString(k) && !harmless.MatchString(str) {
				v[k] = redacted
				s.counts[ruleField]++
				continue
			}
			s.walk(e)
		}
	case []any:
		for _, e := range v {
			s.walk(e)
		}
	}
}
