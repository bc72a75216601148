// Package upgrade is the version-skew test: it runs the end-to-end mesh
// flow with each component one release apart from the others (see
// README.md). The base release is named in the file BASE.
package upgrade
