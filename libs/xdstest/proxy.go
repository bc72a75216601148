package xdstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// The resource types the mesh serves, registered for UnmarshalNew.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Response is one response as the proxy saw it.
type Response struct {
	TypeURL string
	// Version is version_info (SotW) or system_version_info (delta).
	Version string
	Nonce   string
	// Resources are the resources in the response, by name.
	Resources map[string]*anypb.Any
	// Versions are the resource versions (delta only).
	Versions map[string]string
	// Removed are the removed names (delta only).
	Removed []string
	// Nacked says the proxy rejected the response.
	Nacked bool
}

// Names returns the names of the response's resources, sorted.
func (r Response) Names() []string {
	out := make([]string, 0, len(r.Resources))
	for n := range r.Resources {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ProxyOptions configure a Proxy.
type ProxyOptions struct {
	// NodeID is sent as the node id.
	NodeID string
	// Delta selects the incremental protocol.
	Delta bool
	// Types are subscribed in this order, each as a wildcard unless Names
	// gives explicit names for it.
	Types []string
	// Names are explicit subscriptions by type.
	Names map[string][]string
	// Versions are the version_info (SotW) per type to send in the first
	// request, as a reconnecting proxy does.
	Versions map[string]string
	// Initial are the initial_resource_versions (delta) per type, name →
	// version, to send in the first request, as a reconnecting proxy does.
	Initial map[string]map[string]string
	// Reject, when set, is asked about every response; a non-empty answer
	// NACKs it with that message.
	Reject func(Response) string
}

// Proxy is a running simulated proxy.
type Proxy struct {
	opts      ProxyOptions
	responses chan Response
	done      chan struct{}
	cancel    context.CancelFunc

	mu       sync.Mutex
	held     map[string]map[string]*anypb.Any // type → name → resource
	versions map[string]string                // type → last accepted version_info
	err      error
}

// StartProxy opens the stream on cc and subscribes; a stream the server
// ends at once (a refusal) is reported by Err once Done is closed. The proxy
// runs until ctx ends, Stop is called, or the stream fails (see Err).
func StartProxy(ctx context.Context, cc grpc.ClientConnInterface, o ProxyOptions) (*Proxy, error) {
	ctx, cancel := context.WithCancel(ctx)
	p := &Proxy{opts: o, responses: make(chan Response, 1024), done: make(chan struct{}), cancel: cancel,
		held: map[string]map[string]*anypb.Any{}, versions: map[string]string{}}
	client := discovery.NewAggregatedDiscoveryServiceClient(cc)
	node := &corev3.Node{Id: o.NodeID}
	var run func() error
	var err error
	if o.Delta {
		var st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		if st, err = client.DeltaAggregatedResources(ctx); err == nil {
			err = subscribe(st.Send, o.Types, node, func(t string, n *corev3.Node) *discovery.DeltaDiscoveryRequest {
				return &discovery.DeltaDiscoveryRequest{Node: n, TypeUrl: t, ResourceNamesSubscribe: o.Names[t], InitialResourceVersions: o.Initial[t]}
			})
		}
		run = func() error { return p.runDelta(st) }
	} else {
		var st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		if st, err = client.StreamAggregatedResources(ctx); err == nil {
			err = subscribe(st.Send, o.Types, node, func(t string, n *corev3.Node) *discovery.DiscoveryRequest {
				return &discovery.DiscoveryRequest{Node: n, TypeUrl: t, ResourceNames: o.Names[t], VersionInfo: o.Versions[t]}
			})
		}
		run = func() error { return p.runSotW(st) }
	}
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		defer close(p.done)
		defer close(p.responses)
		err := run()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
	}()
	return p, nil
}

// subscribe sends the first request of each type, in order, built by
// req; only the first carries the node. A stream the server has already
// ended (io.EOF) is not an error here: Err reports why it ended.
func subscribe[R any](send func(R) error, types []string, node *corev3.Node, req func(typeURL string, node *corev3.Node) R) error {
	for _, t := range types {
		if err := send(req(t, node)); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		node = nil
	}
	return nil
}

func (p *Proxy) runSotW(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) error {
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		r := Response{TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(), Resources: map[string]*anypb.Any{}}
		for _, a := range resp.GetResources() {
			name, err := NameOf(a)
			if err != nil {
				return err
			}
			r.Resources[name] = a
		}
		req := &discovery.DiscoveryRequest{TypeUrl: r.TypeURL, ResponseNonce: r.Nonce, ResourceNames: p.opts.Names[r.TypeURL]}
		if msg := p.reject(r); msg != "" {
			r.Nacked = true
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: msg}
			p.mu.Lock()
			req.VersionInfo = p.versions[r.TypeURL]
			p.mu.Unlock()
		} else {
			p.mu.Lock()
			p.held[r.TypeURL] = maps.Clone(r.Resources)
			p.versions[r.TypeURL] = r.Version
			p.mu.Unlock()
			req.VersionInfo = r.Version
		}
		if err := st.Send(req); err != nil {
			return sendErr(err, func() error { _, err := st.Recv(); return err })
		}
		p.deliver(r)
	}
}

func (p *Proxy) runDelta(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) error {
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		r := Response{TypeURL: resp.GetTypeUrl(), Version: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(),
			Resources: map[string]*anypb.Any{}, Versions: map[string]string{}, Removed: resp.GetRemovedResources()}
		for _, res := range resp.GetResources() {
			r.Resources[res.GetName()] = res.GetResource()
			r.Versions[res.GetName()] = res.GetVersion()
		}
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeURL, ResponseNonce: r.Nonce}
		if msg := p.reject(r); msg != "" {
			r.Nacked = true
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: msg}
		} else {
			p.mu.Lock()
			h := p.held[r.TypeURL]
			if h == nil {
				h = map[string]*anypb.Any{}
				p.held[r.TypeURL] = h
			}
			maps.Copy(h, r.Resources)
			for _, n := range r.Removed {
				delete(h, n)
			}
			p.versions[r.TypeURL] = r.Version
			p.mu.Unlock()
		}
		if err := st.Send(req); err != nil {
			return sendErr(err, func() error { _, err := st.Recv(); return err })
		}
		p.deliver(r)
	}
}

// sendErr is why a Send failed: gRPC reports a stream the server ended
// as io.EOF on Send, and its status on the receive after any responses
// still in flight.
func sendErr(err error, recv func() error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if rerr := recv(); rerr != nil {
			return rerr // responses still in flight are skipped
		}
	}
}

func (p *Proxy) reject(r Response) string {
	if p.opts.Reject == nil {
		return ""
	}
	return p.opts.Reject(r)
}

// deliver queues r for Next; when nobody reads, old responses are dropped
// rather than stalling the stream.
func (p *Proxy) deliver(r Response) {
	select {
	case p.responses <- r:
	default:
	}
}

// Next returns the next response the proxy received (after it replied).
func (p *Proxy) Next(ctx context.Context) (Response, error) {
	select {
	case <-ctx.Done():
		return Response{}, ctx.Err()
	case r, ok := <-p.responses:
		if !ok {
			return Response{}, fmt.Errorf("stream ended: %w", p.Err())
		}
		return r, nil
	}
}

// Held returns the resources the proxy holds of typeURL, by name.
func (p *Proxy) Held(typeURL string) map[string]*anypb.Any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.held[typeURL])
}

// Version returns the last version_info the proxy accepted for typeURL.
func (p *Proxy) Version(typeURL string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions[typeURL]
}

// Versions returns the last accepted version of every type.
func (p *Proxy) Versions() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.versions)
}

// Err is why the stream ended (nil while it runs).
func (p *Proxy) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil && errors.Is(p.err, io.EOF) {
		return nil
	}
	return p.err
}

// Done is closed when the stream has ended.
func (p *Proxy) Done() <-chan struct{} { return p.done }

// Stop ends the stream and waits for it.
func (p *Proxy) Stop() {
	p.cancel()
	<-p.done
}

// NameOf reads the xDS name of a resource: its name field, or cluster_name
// for a ClusterLoadAssignment.
func NameOf(a *anypb.Any) (string, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return "", fmt.Errorf("unmarshal %s: %w", a.GetTypeUrl(), err)
	}
	fd := m.ProtoReflect().Descriptor().Fields()
	for _, name := range []string{"name", "cluster_name"} {
		if f := fd.ByName(protoreflect.Name(name)); f != nil {
			return m.ProtoReflect().Get(f).String(), nil
		}
	}
	return "", fmt.Errorf("%s has no name field", a.GetTypeUrl())
}
