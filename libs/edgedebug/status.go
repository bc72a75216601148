package edgedebug

// PathEdge is the edge's own state (EdgeStatus), whether or not a proxy is
// connected.
const PathEdge = "/v1/edge"

// EdgeStatus is the body of GET PathEdge.
type EdgeStatus struct {
	// Edge is the edge's pod name.
	Edge string `json:"edge"`
	// Generation is the applied generation as the other bodies print it
	// ("EPOCH:NUMBER", or NUMBER in epoch 0).
	Generation string `json:"generation"`
	// Epoch and Number are the applied generation's parts: generations
	// order by epoch, then number.
	Epoch  uint64 `json:"epoch"`
	Number uint64 `json:"number"`
}
