package bus

import (
	"errors"
	"fmt"
	"strings"
)

// Key escaping.
//
// NATS KV keys are dot-separated tokens made of the characters [-/_=.a-zA-Z0-9],
// with no empty token. Kubernetes names may contain dots, and other names the
// mesh uses as keys (type URLs, cluster names such as "ns/svc|80") contain
// characters NATS forbids. Every key part therefore goes through EscapeToken:
//
//   - the characters [-/a-zA-Z0-9] stand for themselves;
//   - every other byte is written as '_' followed by two upper-case hex digits
//     ("." becomes "_2E", "_" becomes "_5F", "|" becomes "_7C");
//   - the empty string is written as "=".
//
// The mapping is injective, so UnescapeToken recovers the exact input, and an
// escaped token never contains '.', '*' or '>', so it can never widen a watch.

const hexDigits = "0123456789ABCDEF"

// emptyToken stands for the empty string, which NATS does not allow as a token.
const emptyToken = "="

// ErrBadKey is returned when a key or token is not in the escaped form.
var ErrBadKey = errors.New("malformed escaped key")

func plain(c byte) bool {
	return c == '-' || c == '/' ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// EscapeToken turns any string into one valid NATS subject token.
func EscapeToken(s string) string {
	if s == "" {
		return emptyToken
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0f])
	}
	return b.String()
}

// UnescapeToken reverses EscapeToken.
func UnescapeToken(tok string) (string, error) {
	if tok == emptyToken {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty token", ErrBadKey)
	}
	if !strings.Contains(tok, "_") {
		for i := 0; i < len(tok); i++ {
			if !plain(tok[i]) {
				return "", fmt.Errorf("%w: character %q in token %q", ErrBadKey, tok[i], tok)
			}
		}
		return tok, nil
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case plain(c):
			b = append(b, c)
		case c == '_' && i+2 < len(tok):
			hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: bad escape at offset %d in token %q", ErrBadKey, i, tok)
			}
			v := byte(hi<<4 | lo)
			if plain(v) {
				// An escaped plain character would give two spellings of one string.
				return "", fmt.Errorf("%w: needless escape at offset %d in token %q", ErrBadKey, i, tok)
			}
			b = append(b, v)
			i += 2
		default:
			return "", fmt.Errorf("%w: character %q at offset %d in token %q", ErrBadKey, c, i, tok)
		}
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Key joins parts into one KV key, escaping each part into its own token.
// Key("service", "bookstore", "bookstore.v1") is "service.bookstore.bookstore_2Ev1".
func Key(parts ...string) string {
	toks := make([]string, len(parts))
	for i, p := range parts {
		toks[i] = EscapeToken(p)
	}
	return strings.Join(toks, ".")
}

// SplitKey reverses Key.
func SplitKey(key string) ([]string, error) {
	toks := strings.Split(key, ".")
	parts := make([]string, len(toks))
	for i, t := range toks {
		p, err := UnescapeToken(t)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		parts[i] = p
	}
	return parts, nil
}

// ValidKey reports whether key is a well-formed KV key: dot-separated,
// non-empty tokens of the characters NATS allows in keys.
func ValidKey(key string) bool {
	if key == "" || key[0] == '.' || key[len(key)-1] == '.' {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case plain(c) || c == '_' || c == '=':
		case c == '.':
			if key[i-1] == '.' {
				return false
			}
		default:
			return false
		}
	}
	return true
}
