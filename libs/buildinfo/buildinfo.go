// Package buildinfo says which version of the code a binary is: the
// components log it and serve it in their metrics, and the osm CLI prints
// its own.
package buildinfo

import "runtime/debug"

// Version is the running binary's version (see Of).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return Of(bi)
}

// Of is the module's version, or, for a binary built from a checkout
// (version "(devel)", as `make images` builds), the commit it was built
// from, "-dirty" when the tree had changes.
func Of(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}
