package soak

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a soak measured.
type Report struct {
	Config Config
	// Setup is the time from the start to the proxies' initial sync, and
	// InitialSync the part of it the proxies took; Wall the whole run.
	Setup, InitialSync, Wall time.Duration

	// LongestGap is the longest time any proxy was without a control
	// plane, which proxy, when (from the soak's start) and in which phase.
	LongestGap      time.Duration
	LongestGapProxy string
	LongestGapAt    time.Duration
	LongestGapPhase string
	// Phases are the gaps by fault.
	Phases []phaseRow
	// MostDownAtOnce is the most proxies without a control plane at one
	// sample (every second); DownAtEnd those without one at the end.
	MostDownAtOnce, DownAtEnd int
	// Streams is the number of streams that delivered config.
	Streams int
	// EndedBy counts the ends of streams by gRPC code.
	EndedBy map[string]int

	// Regressions and WrongIdentity must be 0, as must ExpiredCertProxies
	// and the faults' errors (Phases).
	Regressions, WrongIdentity int
	// SameContentBack counts resources served under an older version than
	// the one held but with the same content hash (edges that disagree on
	// a record's version; not a rollback).
	SameContentBack int
	// ViewBack counts responses from an edge behind one the proxy was
	// served by earlier, for content the proxy holds unchanged; Unparsed
	// versions that carry no generation.
	ViewBack, Unparsed int
	// TLSErrors counts edge certificates the proxies refused.
	TLSErrors int
	// ExpiredCertProxies is the number of proxies seen holding an expired
	// service-cert, LongestExpired the longest past its expiry.
	ExpiredCertProxies int
	LongestExpired     time.Duration
	// ClientCertFailures counts failed renewals of the proxies' xDS client
	// certificates (each retried 2 s later).
	ClientCertFailures int

	// Edits are the policy edits; Rotation the root rotation's steps.
	Edits    editStats
	Rotation []rotationStep

	// Examples are the first few instances of each figure that is not 0.
	Examples map[string][]string
}

// Failures lists the figures that must be 0 and are not.
func (r *Report) Failures() []string {
	var out []string
	if r.Regressions > 0 {
		out = append(out, fmt.Sprintf("%d version regressions", r.Regressions))
	}
	if r.WrongIdentity > 0 {
		out = append(out, fmt.Sprintf("%d wrong-identity secrets", r.WrongIdentity))
	}
	if r.ExpiredCertProxies > 0 {
		out = append(out, fmt.Sprintf("%d proxies held an expired service-cert (longest %s past expiry)", r.ExpiredCertProxies, ms(r.LongestExpired)))
	}
	for _, p := range r.Phases {
		if p.err != nil {
			out = append(out, fmt.Sprintf("fault %s: %v", p.name, p.err))
		}
	}
	return out
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func clock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// Print writes the table.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\nsoak: %d delta proxies of %d identities over 2 edges for %s; certificates %s, max connection age %s; wall %s (setup %s, initial sync %s)\n\n",
		c.Proxies, c.Identities, c.Duration, c.CertTTL, c.MaxConnectionAge, r.Wall.Round(time.Second), r.Setup.Round(time.Second), ms(r.InitialSync))
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tAT\tBACK IN\tGAPS\tLONGEST WITHOUT CONTROL PLANE\tP99 GAP\tRESULT")
	for _, p := range r.Phases {
		at, took, res := "-", "-", "ok"
		if p.at > 0 || p.took > 0 {
			at, took = clock(p.at), ms(p.took)
		}
		if p.err != nil {
			res = "error: " + strings.ReplaceAll(p.err.Error(), "\n", " ")
			if len(res) > 120 {
				res = res[:120] + "..."
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.name, at, took, p.gaps, ms(p.longest), ms(p.p99), res)
	}
	for _, s := range r.Rotation {
		got := ms(s.converged)
		if s.missing > 0 {
			got = fmt.Sprintf("%d proxies never got it", s.missing)
		}
		fmt.Fprintf(tw, "  %s reached every proxy in\t\t%s\t\t\t\t\n", s.what, got)
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tMUST BE")
	longest := ms(r.LongestGap)
	if r.LongestGap > 0 {
		longest += fmt.Sprintf(" (%s at %s, %s)", r.LongestGapProxy, clock(r.LongestGapAt), r.LongestGapPhase)
	}
	fmt.Fprintf(tw, "longest time a proxy was without a control plane\t%s\t\n", longest)
	fmt.Fprintf(tw, "most proxies without a control plane at once\t%d of %d\t\n", r.MostDownAtOnce, c.Proxies)
	fmt.Fprintf(tw, "proxies without a control plane at the end\t%d\t\n", r.DownAtEnd)
	fmt.Fprintf(tw, "version regressions\t%d\t0\n", r.Regressions)
	fmt.Fprintf(tw, "wrong-identity secrets\t%d\t0\n", r.WrongIdentity)
	fmt.Fprintf(tw, "resources served under an older version, same content\t%d\t\n", r.SameContentBack)
	e := r.Edits
	var kinds []string
	for k, n := range e.byKind {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	fmt.Fprintf(tw, "edits (apiserver write to every affected proxy's ACK)\t%d (%s)\t\n", e.n, strings.Join(kinds, ", "))
	fmt.Fprintf(tw, "edit convergence p50 / p99 / max\t%s / %s / %s\t\n", ms(e.p50), ms(e.p99), ms(e.max))
	fmt.Fprintf(tw, "per-proxy edit delivery p99\t%s\t\n", ms(e.proxyP99))
	fmt.Fprintf(tw, "edits not converged within %s\t%d (%d proxy deliveries missing)\t\n", c.EditTimeout, e.notConverged, e.missing)
	if e.failed > 0 {
		fmt.Fprintf(tw, "edit writes that failed (not counted)\t%d\t\n", e.failed)
	}
	fmt.Fprintf(tw, "proxies seen holding an expired service-cert\t%d (longest %s past expiry)\t0\n", r.ExpiredCertProxies, ms(r.LongestExpired))
	fmt.Fprintf(tw, "edge certificates the proxies refused (TLS)\t%d\t\n", r.TLSErrors)
	fmt.Fprintf(tw, "xDS client certificate renewals failed (retried)\t%d\t\n", r.ClientCertFailures)
	fmt.Fprintf(tw, "responses from an edge behind an earlier one, content unchanged\t%d\t\n", r.ViewBack)
	if r.Unparsed > 0 {
		fmt.Fprintf(tw, "versions without a generation (not checked)\t%d\t\n", r.Unparsed)
	}
	var ends []string
	for k, n := range r.EndedBy {
		ends = append(ends, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(ends)
	fmt.Fprintf(tw, "streams that delivered config / stream ends by code\t%d / %s\t\n", r.Streams, strings.Join(ends, ", "))
	tw.Flush()
	if len(e.slowest) > 0 {
		fmt.Fprintln(w, "\nslowest edits:")
		for _, x := range e.slowest {
			fmt.Fprintf(w, "  %s\n", x)
		}
	}
	var figs []string
	for f := range r.Examples {
		figs = append(figs, f)
	}
	sort.Strings(figs)
	for _, f := range figs {
		fmt.Fprintf(w, "\n%s, e.g.:\n", f)
		for _, ex := range r.Examples[f] {
			fmt.Fprintf(w, "  %s\n", ex)
		}
	}
	if fs := r.Failures(); len(fs) > 0 {
		fmt.Fprintf(w, "\nFAIL: %s\n", strings.Join(fs, "; "))
	} else {
		fmt.Fprintln(w, "\nPASS: every must-be-0 figure is 0")
	}
}
