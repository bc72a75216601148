package caclient

import (
	"os"
	"strings"

	"github.com/openservicemesh/osm/libs/app"
	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
)

// DefaultTokenFile is where a component's projected ServiceAccount token,
// with the cert-authority's audience, is mounted.
const DefaultTokenFile = "/var/run/secrets/openservicemesh.io/cert-authority/token"

// Credential is a component's Bootstrap credential, set by the flags
// --ca-bootstrap-token-file and --ca-bootstrap-token-type.
type Credential struct {
	// File holds the token; it is read afresh at every renewal, since the
	// kubelet rotates projected tokens.
	File string
	// Type is "service-account" (the CA runs a TokenReview) or
	// "pre-shared" (the dev token).
	Type string
}

// Flags registers the credential's flags; issues says, for --help, what
// Bootstrap issues to this component.
func (c *Credential) Flags(f *app.Flags, issues string) {
	f.String(&c.File, "ca-bootstrap-token-file", DefaultTokenFile, "credential for the cert-authority's Bootstrap, which issues "+issues+
		": a projected ServiceAccount token with the CA's audience (re-read at every renewal), or the dev pre-shared token")
	f.String(&c.Type, "ca-bootstrap-token-type", "service-account", `how the CA verifies --ca-bootstrap-token-file: "service-account" (TokenReview) or "pre-shared" (dev stack only)`)
}

// Validate checks the flags without touching the file; requiredUnless
// says, in the error, when the credential is not needed.
func (c *Credential) Validate(requiredUnless string) error {
	if c.File == "" {
		return app.FlagError("ca-bootstrap-token-file", "is required unless %s", requiredUnless)
	}
	if c.TokenType() == cav1.TokenType_TOKEN_TYPE_UNSPECIFIED {
		return app.FlagError("ca-bootstrap-token-type", `must be "service-account" or "pre-shared", got %q`, c.Type)
	}
	return nil
}

// CheckFile reports a token file that cannot be read, naming the flag.
func (c *Credential) CheckFile() error {
	if _, err := os.Stat(c.File); err != nil {
		return app.FlagError("ca-bootstrap-token-file", "%v", err)
	}
	return nil
}

// TokenType is the wire enum of Type; TOKEN_TYPE_UNSPECIFIED for an
// unknown one.
func (c *Credential) TokenType() cav1.TokenType {
	switch c.Type {
	case "service-account":
		return cav1.TokenType_TOKEN_TYPE_SERVICE_ACCOUNT
	case "pre-shared":
		return cav1.TokenType_TOKEN_TYPE_PRE_SHARED
	}
	return cav1.TokenType_TOKEN_TYPE_UNSPECIFIED
}

// Token reads the token from File.
func (c *Credential) Token() (string, error) {
	b, err := os.ReadFile(c.File)
	return strings.TrimSpace(string(b)), err
}
