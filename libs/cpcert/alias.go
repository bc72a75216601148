package cpcert

import "github.com/openservicemesh/osm/libs/caclient"

// Credential is caclient.Credential; the name stays until every component
// registers the cert-authority client flags through caclient.Config.
type Credential = caclient.Credential

// DefaultTokenFile is caclient.DefaultTokenFile.
const DefaultTokenFile = caclient.DefaultTokenFile
