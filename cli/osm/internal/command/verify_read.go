package command

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openservicemesh/osm/cli/osm/internal/access"
)

// jsz is the part of NATS's /jsz?accounts=true&streams=true&config=true
// that verify reads.
type jsz struct {
	ServerName string `json:"server_name"`
	Disabled   bool   `json:"disabled"`
	Meta       *struct {
		ClusterSize int `json:"cluster_size"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name   string `json:"name"`
			Config *struct {
				Replicas int `json:"num_replicas"`
			} `json:"config"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// nats: each server's monitoring answers with JetStream on; each bucket's
// stream exists with as many replicas as servers.
func (v *verifier) nats(ctx context.Context) {
	mon, ok := v.client.Monitors()
	if !ok {
		v.r.fail(catNATS, "", "NATS: this osm cannot find NATS's monitoring endpoint")
		return
	}
	eps, err := mon.NATSMonitors(ctx)
	if err != nil {
		v.r.fail(catNATS, "NATS's monitoring endpoint (port monitor, 8222) is how verify reads the buckets without NATS credentials", "NATS: %v", err)
		return
	}
	replicas := map[string]int{} // bucket → replicas, from the servers that know it
	servers := 0
	for _, ep := range eps {
		var j jsz
		if err := getJSON(ctx, "http://"+ep.Addr+"/jsz?accounts=true&streams=true&config=true", &j); err != nil {
			v.r.fail(catNATS, fmt.Sprintf("kubectl logs -n %s %s", v.g.namespace, ep.Name), "NATS server %s does not answer its monitoring endpoint: %v", ep.Name, err)
			continue
		}
		if j.Disabled {
			v.r.fail(catNATS, "the chart's NATS config turns JetStream on: check the ConfigMap osm-nats", "NATS server %s has JetStream off", ep.Name)
			continue
		}
		size := 1
		if j.Meta != nil && j.Meta.ClusterSize > 0 {
			size = j.Meta.ClusterSize
		}
		servers = max(servers, size)
		v.r.pass(catNATS, "NATS server %s answers, JetStream on, %d server(s) in its cluster", cmpOr(j.ServerName, ep.Name), size)
		for _, a := range j.Accounts {
			for _, s := range a.Streams {
				if b, ok := strings.CutPrefix(s.Name, "KV_"); ok && s.Config != nil {
					replicas[b] = max(replicas[b], s.Config.Replicas)
				}
			}
		}
	}
	if servers == 0 {
		return
	}
	for _, b := range meshBuckets {
		n, ok := replicas[b]
		switch {
		case !ok:
			v.r.fail(catNATS, "the component that writes it declares it at start (mesh-compiled and mesh-leases: the policy-compiler; mesh-observed: the smi-watcher; mesh-trust: the cert-authority): check that it is running",
				"bucket %s is missing", b)
		case n != servers:
			v.r.fail(catNATS, "the writers declare their buckets with --kv-replicas (chart value global.nats.replicas); a bucket declared before a change keeps its replicas: nats stream edit KV_"+b+" --replicas "+strconv.Itoa(servers),
				"bucket %s has %d replica(s), want %d (one per NATS server)", b, n, servers)
		default:
			v.r.pass(catNATS, "bucket %s: %d replica(s), one per NATS server", b, n)
		}
	}
}

// readCompilerMetrics reads osm_compiler_generation and
// osm_compiler_rejected_policies from a compiler's /metrics.
func readCompilerMetrics(ctx context.Context, ep access.Endpoint) (compilerMetrics, error) {
	m := compilerMetrics{name: ep.Name}
	body, err := getBody(ctx, "http://"+ep.Addr+"/metrics")
	if err != nil {
		return m, err
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := metricSample(line)
		if !ok {
			continue
		}
		switch name {
		case "osm_compiler_generation":
			m.generation, m.hasGeneration = int64(val), true
		case "osm_compiler_rejected_policies":
			m.rejected = int64(val)
		}
	}
	return m, sc.Err()
}

// metricSample parses a Prometheus text sample line: its name (without
// labels) and value.
func metricSample(line string) (string, float64, bool) {
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	name := line
	if i := strings.IndexAny(line, "{ "); i >= 0 {
		name = line[:i]
	}
	rest := line[len(name):]
	if strings.HasPrefix(rest, "{") {
		i := strings.LastIndex(rest, "}")
		if i < 0 {
			return "", 0, false
		}
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return "", 0, false
	}
	val, err := strconv.ParseFloat(fields[0], 64)
	return name, val, err == nil
}

var plainHTTP = &http.Client{Timeout: 10 * time.Second}

func getBody(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := plainHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

func getJSON(ctx context.Context, url string, v any) error {
	b, err := getBody(ctx, url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
