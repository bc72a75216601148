package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openservicemesh/osm/tests/stack"
)

// The traffic check of --once.
const (
	// checkCalls is how many of bookbuyer's calls are counted.
	checkCalls = 1000
	// checkTolerance is how far, in points, a backend's share of them may
	// be from the split's weight: 1,000 calls at 75/25 have a standard
	// deviation of 1.4 points.
	checkTolerance = 6.0
	// checkThiefCalls is how many of bookthief's calls are counted.
	checkThiefCalls = 5
)

// check is --once's check of the traffic, against the TrafficSplit as it
// is now: bookbuyer's calls succeed (once its first one has, as it gets
// its configuration), checkCalls of them split as the weights say within
// checkTolerance points, and none of bookthief's is served. It returns the
// report's rows, and an error when a check fails.
func (t *traffic) check(ctx context.Context) ([]row, error) {
	buyer, thief := t.clientNamed("bookbuyer"), t.clientNamed("bookthief")
	if buyer == nil || thief == nil {
		return nil, errors.New("traffic check: the bookbuyer and bookthief clients are not running")
	}
	weights, err := splitWeights(ctx, t)
	if err != nil {
		return nil, err
	}
	err = stack.Eventually(ctx, time.Minute, func() error {
		if sum(buyer.stats.totals(), "", resultOK) > 0 {
			return nil
		}
		return t.exited(buyer, errors.New("no call succeeded yet"))
	})
	if err != nil {
		return nil, fmt.Errorf("traffic check: bookbuyer's calls: %w (last: %s)\n%s", err, buyer.stats.other(time.Time{}), buyer.stats.output())
	}
	// The first calls may go to one version while the client still gets
	// the other's endpoints: count from a second after the first success.
	time.Sleep(time.Second)
	from, thiefFrom := buyer.stats.totals(), thief.stats.totals()
	err = stack.Eventually(ctx, time.Minute, func() error {
		if n := sum(diff(buyer.stats.totals(), from), "", ""); n < checkCalls {
			return t.exited(buyer, fmt.Errorf("%d of %d calls", n, checkCalls))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("traffic check: bookbuyer's calls: %w", err)
	}
	calls := diff(buyer.stats.totals(), from)
	// bookthief's calls may each wait out their deadline (2 s) while its
	// client waits for a configuration the mesh never gives it.
	err = stack.Eventually(ctx, time.Minute, func() error {
		if n := sum(diff(thief.stats.totals(), thiefFrom), "", ""); n < checkThiefCalls {
			return t.exited(thief, fmt.Errorf("%d of %d calls", n, checkThiefCalls))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("traffic check: bookthief's calls: %w", err)
	}
	thiefCalls := diff(thief.stats.totals(), thiefFrom)

	return evaluate(calls, thiefCalls, weights, buyer.stats.other(time.Time{}), thief.stats.other(time.Time{}))
}

// evaluate checks bookbuyer's calls against the split's weights by
// backend version and bookthief's calls, given the latest calls of each
// that were neither ok nor denied; it returns the report's rows, and an
// error naming each failed check.
func evaluate(calls, thiefCalls map[outcome]int, weights map[string]int, buyerOther, thiefOther string) ([]row, error) {
	var rows []row
	var errs []error
	n, ok := sum(calls, "", ""), sum(calls, "", resultOK)
	var shares, want []string
	total := 0
	for _, w := range weights {
		total += w
	}
	for _, v := range backends() {
		got := 100 * float64(sum(calls, v, resultOK)) / float64(max(ok, 1))
		shares = append(shares, fmt.Sprintf("%s %.1f%%", v, got))
		want = append(want, fmt.Sprint(weights[v]))
		if total > 0 {
			if w := 100 * float64(weights[v]) / float64(total); math.Abs(got-w) > checkTolerance {
				errs = append(errs, fmt.Errorf("bookbuyer's calls to %s: %.1f%% of %d, want %.0f%% ± %.0f (the TrafficSplit bookstore/bookstore-split)", v, got, ok, w, checkTolerance))
			}
		}
	}
	status := fmt.Sprintf("ok %d of %d: %s (split %s)", ok, n, strings.Join(shares, ", "), strings.Join(want, "/"))
	if ok < n {
		failed := fmt.Sprintf("PermissionDenied %d, other %d", sum(calls, "", resultDenied), sum(calls, "", resultOther))
		status = fmt.Sprintf("FAILED %d of %d (%s); %s", n-ok, n, failed, strings.TrimPrefix(status, "ok "))
		errs = append(errs, fmt.Errorf("%d of bookbuyer's %d calls failed (%s; the last other: %s)", n-ok, n, failed, buyerOther))
	}
	rows = append(rows, row{"bookbuyer-grpc calls bookstore", status})

	tn, served := sum(thiefCalls, "", ""), sum(thiefCalls, "", resultOK)
	status = fmt.Sprintf("denied: none of %d served (%s)", tn, thiefResults(thiefCalls, thiefOther))
	switch {
	case tn == 0:
		status = "FAILED: no call"
		errs = append(errs, errors.New("bookthief made no call"))
	case served > 0:
		status = fmt.Sprintf("FAILED: %d served", served)
		errs = append(errs, fmt.Errorf("%d of bookthief's %d calls were served; no TrafficTarget lets it call bookstore", served, tn))
	}
	rows = append(rows, row{"bookthief-grpc calls bookstore", status})
	if len(errs) > 0 {
		return rows, fmt.Errorf("traffic check: %w", errors.Join(errs...))
	}
	return rows, nil
}

// thiefResults sums up the calls' results: PermissionDenied, or the
// latest other code and message.
func thiefResults(calls map[outcome]int, other string) string {
	var parts []string
	if n := sum(calls, "", resultDenied); n > 0 {
		parts = append(parts, fmt.Sprintf("PermissionDenied %d", n))
	}
	if n := sum(calls, "", resultOther); n > 0 {
		parts = append(parts, fmt.Sprintf("other %d, the last %s", n, truncate(other, 90)))
	}
	return strings.Join(parts, "; ")
}

// exited adds the client's exit to err when it is no longer running.
func (t *traffic) exited(c *client, err error) error {
	select {
	case <-c.app.done:
		return fmt.Errorf("%w; %s's client exited: %v\n%s", err, c.name, c.app.err, c.app.tail.String())
	default:
		return err
	}
}

// splitWeights are the weights of the demo's TrafficSplit by backend
// version (bookstore-v1 is v1).
func splitWeights(ctx context.Context, t *traffic) (map[string]int, error) {
	u, err := t.o.cluster.Dynamic().Resource(gvrTrafficSplit).Namespace("bookstore").Get(ctx, "bookstore-split", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("traffic check: the TrafficSplit bookstore/bookstore-split: %w", err)
	}
	list, _, err := unstructured.NestedSlice(u.Object, "spec", "backends")
	if err != nil {
		return nil, fmt.Errorf("traffic check: the TrafficSplit bookstore/bookstore-split spec.backends: %w", err)
	}
	out := map[string]int{}
	for _, b := range list {
		m, _ := b.(map[string]any)
		svc, _ := m["service"].(string)
		w, _ := m["weight"].(int64)
		out[strings.TrimPrefix(svc, "bookstore-")] = int(w)
	}
	return out, nil
}
