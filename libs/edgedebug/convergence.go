package edgedebug

import (
	"net/url"
	"strconv"
	"time"
)

// PathGenerations lists the recent generations the edge remembers the
// convergence of (Generations); PathGenerations/<number> is one of them
// with its proxies (GenerationConvergence). A number names the newest
// remembered generation of that number; QueryEpoch picks another epoch.
const PathGenerations = "/v1/generations"

// QueryEpoch selects a generation's epoch on GenerationPath.
const QueryEpoch = "epoch"

// GenerationPath is the path of generation number's convergence; epoch 0
// leaves the epoch to the edge (the newest holding that number).
func GenerationPath(number, epoch uint64) string {
	p := PathGenerations + "/" + strconv.FormatUint(number, 10)
	if epoch != 0 {
		p += "?" + url.Values{QueryEpoch: {strconv.FormatUint(epoch, 10)}}.Encode()
	}
	return p
}

// Generations is the body of GET PathGenerations.
type Generations struct {
	Edge string `json:"edge"`
	// Applied is the edge's applied generation.
	Applied string `json:"applied"`
	// Generations are the remembered ones, oldest first (the edge keeps
	// the last 16).
	Generations []GenerationSummary `json:"generations"`
}

// GenerationSummary is one generation as an edge committed it.
type GenerationSummary struct {
	// Generation is "EPOCH:NUMBER" (NUMBER in epoch 0).
	Generation string `json:"generation"`
	Epoch      uint64 `json:"epoch"`
	Number     uint64 `json:"number"`
	// CompilerCommit is when the policy-compiler committed it (its
	// generation record's commit_time); EdgeCommit when this edge
	// applied it.
	CompilerCommit time.Time `json:"compiler_commit"`
	EdgeCommit     time.Time `json:"edge_commit"`
	// ObservedRevision is the KV mesh-observed revision of the last
	// smi-watcher write the generation includes.
	ObservedRevision uint64 `json:"observed_revision"`
	// ObservedEpoch is the smi-watcher's epoch of the view it was
	// compiled from: revisions compare within one observed epoch. 0 from
	// an edge that does not report it.
	ObservedEpoch uint64 `json:"observed_epoch,omitempty"`
	// Affected counts the proxies on this edge the commit changed
	// something for; Acked and Nacked those that answered so.
	Affected int `json:"affected"`
	Acked    int `json:"acked"`
	Nacked   int `json:"nacked"`
}

// GenerationConvergence is the body of GET GenerationPath.
type GenerationConvergence struct {
	Edge string `json:"edge"`
	GenerationSummary
	Proxies []ProxyConvergence `json:"proxies"`
}

// ProxyConvergence is one affected proxy's answer to a generation.
type ProxyConvergence struct {
	NodeID   string `json:"node_id"`
	Identity string `json:"identity"`
	StreamID uint64 `json:"stream_id"`
	// Ack is the time of the proxy's last ACK of a response the
	// generation caused (or a later one that superseded it before the
	// proxy answered); absent while none came. Latency is Ack minus the
	// compiler's commit, the measure of the edge's
	// osm_xds_push_ack_latency_seconds.
	Ack     *time.Time    `json:"ack,omitempty"`
	Latency time.Duration `json:"latency_ns,omitempty"`
	// Nack is the proxy's last rejection of a response the generation
	// caused.
	Nack *Nack `json:"nack,omitempty"`
}
