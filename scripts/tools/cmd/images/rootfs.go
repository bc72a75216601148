package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"runtime/debug"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// The image's user: distroless's nonroot numbers, named osm.
const (
	userID    = 65532
	groupID   = 65532
	userName  = "osm"
	userHome  = "/home/osm"
	binDir    = "/usr/local/bin"
	caFile    = "/etc/ssl/certs/ca-certificates.crt"
	bundleMod = "golang.org/x/crypto/x509roots/fallback"
)

// entry is one file or directory of an image's only layer.
type entry struct {
	name     string // absolute path in the image
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

// rootfs lists the image's files in the order they are written: every
// directory before what it holds, and otherwise sorted, so the tar is the
// same byte for byte for the same inputs.
func rootfs(service string, binary, caBundle []byte) []entry {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:%s:/sbin/nologin\n", userName, userID, groupID, userName, userHome)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", userName, groupID)
	return []entry{
		{name: "/etc", dir: true, mode: 0o755},
		{name: "/etc/group", mode: 0o644, data: []byte(group)},
		{name: "/etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "/etc/ssl", dir: true, mode: 0o755},
		{name: "/etc/ssl/certs", dir: true, mode: 0o755},
		{name: caFile, mode: 0o644, data: caBundle},
		{name: "/home", dir: true, mode: 0o755},
		{name: userHome, dir: true, mode: 0o700, uid: userID, gid: groupID},
		{name: "/tmp", dir: true, mode: 0o1777},
		{name: "/usr", dir: true, mode: 0o755},
		{name: "/usr/local", dir: true, mode: 0o755},
		{name: binDir, dir: true, mode: 0o755},
		{name: binDir + "/" + service, mode: 0o755, data: binary},
	}
}

// layerTar writes entries as a gzip-compressed tar. Every header is fixed:
// modification time mtime (the commit time), the entry's owner by number
// with no user or group names, the entry's mode; gzip's header carries no
// name and no time. The same entries and mtime give the same bytes (for the
// same Go version, whose compress/flate does the compressing).
func layerTar(entries []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name[1:], // relative, as image layers are
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// caBundle returns the PEM bundle written to /etc/ssl/certs: the Mozilla
// (NSS) roots of the golang.org/x/crypto/x509roots/fallback module that
// scripts/tools/go.mod pins, so every machine writes the same file, unlike
// the host's own bundle. Roots that NSS constrains (a distrust-after date)
// are left out: a PEM file cannot carry the constraint, and trusting them
// without it would trust more than NSS does. It also returns how many roots
// it holds and how many it left out.
func caBundle() (pemBytes []byte, kept, skipped int, err error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Mozilla NSS root certificates from %s %s,\n# without the roots NSS constrains with a distrust-after date.\n", bundleMod, moduleVersion(bundleMod))
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			skipped++
			continue
		}
		c, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("root certificate %d of %s: %w", kept+skipped, bundleMod, err)
		}
		fmt.Fprintf(&buf, "\n# %s\n", c.Subject)
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate}); err != nil {
			return nil, 0, 0, err
		}
		kept++
	}
	if kept == 0 {
		return nil, 0, 0, fmt.Errorf("%s holds no unconstrained root", bundleMod)
	}
	return buf.Bytes(), kept, skipped, nil
}

// moduleVersion returns the version of module path that this program was
// built with, or "(unknown)".
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					d = d.Replace
				}
				return d.Version
			}
		}
	}
	return "(unknown)"
}
