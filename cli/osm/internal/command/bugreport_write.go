package command

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// errorsFile is errors.txt: each part that could not be collected.
func (r *bugReport) errorsFile() []byte {
	var b bytes.Buffer
	if len(r.errs) == 0 {
		b.WriteString("Every part was collected.\n")
		return b.Bytes()
	}
	fmt.Fprintf(&b, "%d part(s) could not be collected; the others are in the tarball.\n\n", len(r.errs))
	for _, e := range r.errs {
		fmt.Fprintf(&b, "%s:\n", e.part)
		for _, l := range strings.Split(e.err.Error(), "\n") {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.Bytes()
}

// redactions sums the files' redactions by rule.
func (r *bugReport) redactions() (map[string]int, int) {
	by, total := map[string]int{}, 0
	for _, f := range r.files {
		for rule, n := range f.redactions {
			by[rule] += n
			total += n
		}
	}
	return by, total
}

// readme is README.txt: what the tarball holds and what was removed.
func (r *bugReport) readme(errs reportFile) []byte {
	var b bytes.Buffer
	v := thisVersion()
	fmt.Fprintf(&b, "osm bug-report\n==============\n\nWritten %s by osm %s (%s, %s).\n", r.now.Format(time.RFC3339), v.Version, v.Platform, v.GoVersion)
	fmt.Fprintf(&b, "Control-plane namespace: %s. Mesh: %s; its namespaces: %s.\n\n", r.namespace, cmpOr(r.mesh, "unknown"), listOrNone(r.meshNS))
	b.WriteString(`Layout
  README.txt      this file
  errors.txt      each part that could not be collected, and why
  versions.yaml   osm's and each component's version (osm version -o yaml),
                  and each process's (its /metrics' target_info)
  verify.txt      osm verify's output, whole, even when checks fail
  namespaces.txt  the mesh's namespaces
  control-plane/  the control plane's pods, Deployments, StatefulSets and
                  Services (YAML; managedFields left out), its Secrets'
                  names, types and keys (never their data)
  policies/       the objects of the chart's CRDs (SMI policies, OSM's such
                  as Retry, MeshConfig) in the control-plane and mesh
                  namespaces (YAML, with any status), each SMI or OSM policy's
                  verdict (status.txt) and the Events on them (events.yaml)
  events/         the Events of each namespace above, oldest first
  metrics/        each component's /metrics, NATS's /varz and /jsz
  proxies/        each edge's /v1/edge, /v1/proxies and /v1/generations;
                  proxies.txt is osm proxy list

What it never holds: Secrets' data, private keys, tokens (the operator's
token and certificate stayed in osm's memory), NATS credentials. Every file
passed a scrub before it was added; what it removed reads REDACTED,
REDACTED-PRIVATE-KEY or REDACTED-TOKEN. Check the files before you share
them: object names, Events and metrics stay.

`)
	by, total := r.redactions()
	fmt.Fprintf(&b, "Redactions: %d", total)
	if total > 0 {
		var parts []string
		for _, rule := range sortedKeys(by) {
			parts = append(parts, fmt.Sprintf("%s %d", rule, by[rule]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	b.WriteString("\n\nFiles (size in bytes, redactions)\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, f := range append([]reportFile{errs}, r.sorted()...) {
		red := "-"
		if len(f.redactions) > 0 {
			var parts []string
			for _, rule := range sortedKeys(f.redactions) {
				parts = append(parts, fmt.Sprintf("%s %d", rule, f.redactions[rule]))
			}
			red = strings.Join(parts, ", ")
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", f.name, len(f.data), red)
	}
	_ = tw.Flush()
	return b.Bytes()
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// write writes the tarball to path (mode 0600, through a temporary file in
// the same directory) and returns its size.
func (r *bugReport) write(path string) (int64, error) {
	s := newScrubber()
	errs := reportFile{name: "errors.txt", data: s.text(r.errorsFile()), redactions: s.counts}
	s = newScrubber()
	readme := reportFile{name: "README.txt", data: s.text(r.readme(errs))}
	files := append([]reportFile{readme, errs}, r.sorted()...)

	tmp, err := os.CreateTemp(filepath.Dir(path), ".osm-bug-report-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	if err := r.writeTar(tmp, files); err != nil {
		tmp.Close()
		return 0, err
	}
	st, err := tmp.Stat()
	if err == nil {
		err = tmp.Close()
	}
	if err != nil {
		return 0, err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return 0, err
	}
	if _, err := os.Stat(path); err == nil {
		return 0, fmt.Errorf("%s appeared meanwhile: remove it, or name another file with --output", path)
	}
	return st.Size(), os.Rename(tmp.Name(), path)
}

// firstFiles come first in the tarball, after the README and errors.txt;
// the others keep the order they were collected in.
var firstFiles = []string{"versions.yaml", "verify.txt", "namespaces.txt"}

// sorted are the collected files in the tarball's order.
func (r *bugReport) sorted() []reportFile {
	out := slices.Clone(r.files)
	rank := func(f reportFile) int {
		if i := slices.Index(firstFiles, f.name); i >= 0 {
			return i
		}
		return len(firstFiles)
	}
	slices.SortStableFunc(out, func(a, b reportFile) int { return rank(a) - rank(b) })
	return out
}

func (r *bugReport) writeTar(w io.Writer, files []reportFile) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		h := &tar.Header{Name: r.dir + "/" + f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: r.now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// printSummary says what was written, what failed, what the scrub removed,
// and to check it before sharing.
func (r *bugReport) printSummary(w io.Writer, path string, size int64, p painter) {
	fmt.Fprintf(w, "%s wrote %s: %d files, %s\n", p.green("✔"), path, len(r.files)+2, humanSize(size))
	if r.verifyChecks > 0 {
		mark := p.green("✔")
		if r.verifyFailed > 0 {
			mark = p.yellow("!")
		}
		fmt.Fprintf(w, "%s verify: %d of %d checks failed (verify.txt)\n", mark, r.verifyFailed, r.verifyChecks)
	}
	if len(r.errs) > 0 {
		var parts []string
		for _, e := range r.errs {
			if !slices.Contains(parts, e.part) {
				parts = append(parts, e.part)
			}
		}
		fmt.Fprintf(w, "%s not collected (errors.txt says why): %s\n", p.yellow("!"), strings.Join(parts, ", "))
	}
	by, total := r.redactions()
	red := fmt.Sprintf("%d", total)
	if total > 0 {
		var parts []string
		for _, rule := range sortedKeys(by) {
			parts = append(parts, fmt.Sprintf("%s %d", rule, by[rule]))
		}
		red += " (" + strings.Join(parts, ", ") + ")"
	}
	fmt.Fprintf(w, "  redacted: %s\n", red)
	fmt.Fprintf(w, "Check it before you share it: tar -xzf %s, then read README.txt (what each file holds, what was redacted where).\n"+
		"The scrub removes keys, tokens and passwords, not object names, Events or metrics.\n", filepath.Base(path))
}

// humanSize prints n bytes in B, KiB or MiB.
func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
