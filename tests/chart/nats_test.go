package chart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openservicemesh/osm/libs/bus"
)

// natsFiles are what a rendered NATS server runs with: its config, with
// the container paths and ports moved into dir and onto loopback, and the
// Secrets' data.
type natsFiles struct {
	conf      string            // path of the rewritten nats.conf
	secrets   map[string][]byte // "<secret>/<key>" -> data
	client    int               // client port
	monitor   int               // monitoring port
	serverTLS string            // the server certificate's DNS name to verify
}

// renderNATS renders the chart with vals and lays the NATS server's files
// out in a temporary directory.
func renderNATS(t *testing.T, vals map[string]any) natsFiles {
	t.Helper()
	r, err := render(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	return natsLayout(t, r.Manifest)
}

// natsLayout lays out the NATS server's files of a release manifest (a
// render, or an installed release's, whose Secrets hold what was
// installed) in a temporary directory.
func natsLayout(t *testing.T, manifest string) natsFiles {
	t.Helper()
	dir := t.TempDir()
	f := natsFiles{secrets: map[string][]byte{}, serverTLS: "osm-nats." + namespace + ".svc"}
	var conf string
	for _, o := range objects(t, manifest) {
		md, _ := o.Body["metadata"].(map[string]any)
		switch {
		case o.Body["kind"] == "ConfigMap" && md["name"] == "osm-nats":
			data, _ := o.Body["data"].(map[string]any)
			conf, _ = data["nats.conf"].(string)
		case o.Body["kind"] == "Secret":
			data, _ := o.Body["data"].(map[string]any)
			for k, v := range data {
				b, err := base64.StdEncoding.DecodeString(v.(string))
				if err != nil {
					t.Fatalf("%s %s: %v", o.Key, k, err)
				}
				f.secrets[md["name"].(string)+"/"+k] = b
			}
		}
	}
	if conf == "" {
		t.Fatal("no nats.conf rendered")
	}
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, k), f.secrets["osm-nats-tls/"+k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.client, f.monitor = freePort(t), freePort(t)
	conf = strings.NewReplacer(
		"/etc/nats/tls/", dir+"/",
		"/data/", dir+"/data/",
		`"0.0.0.0:4222"`, fmt.Sprintf(`"127.0.0.1:%d"`, f.client),
		`"0.0.0.0:8222"`, fmt.Sprintf(`"127.0.0.1:%d"`, f.monitor),
		`"0.0.0.0:6222"`, fmt.Sprintf(`"127.0.0.1:%d"`, freePort(t)),
	).Replace(conf)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil { // the PVC's mount
		t.Fatal(err)
	}
	f.conf = filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(f.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// The StatefulSet's environment: the pod name and each role's password.
	t.Setenv("POD_NAME", "osm-nats-0")
	for _, r := range bus.Roles() {
		if pw, ok := f.secrets["osm-nats-user-"+string(r)+"/password"]; ok {
			t.Setenv("NATS_PASSWORD_"+strings.ToUpper(string(r)), string(pw))
		}
	}
	return f
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNATSConfigHasTheBusRoles: the rendered nats.conf parses, and its
// users are exactly the bus roles with the permissions of
// bus.PermissionsFor; with 3 servers it routes to each over verified TLS.
func TestNATSConfigHasTheBusRoles(t *testing.T) {
	for _, c := range []struct {
		values string
		routes int
	}{{"values-dev.yaml", 0}, {"", 3}} {
		t.Run(name(c.values), func(t *testing.T) {
			f := renderNATS(t, valuesFile(t, c.values))
			opts, err := server.ProcessConfigFile(f.conf)
			if err != nil {
				t.Fatalf("nats.conf: %v", err)
			}
			if len(opts.Routes) != c.routes {
				t.Errorf("%d routes, want %d", len(opts.Routes), c.routes)
			}
			if c.routes > 0 && (opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert) {
				t.Error("the routes are not over verified TLS")
			}
			if opts.TLSConfig == nil {
				t.Error("no client TLS")
			}
			users := map[string]*server.User{}
			for _, u := range opts.Users {
				users[u.Username] = u
			}
			for _, r := range bus.Roles() {
				want, _ := bus.PermissionsFor(r)
				u, ok := users[string(r)]
				if want == nil {
					if ok {
						t.Errorf("the unrestricted %s user exists by default", r)
					}
					continue
				}
				if !ok {
					t.Errorf("no user %s", r)
					continue
				}
				if u.Password == "" || strings.HasPrefix(u.Password, "$") {
					t.Errorf("user %s: password not taken from the environment", r)
				}
				if !slices.Equal(u.Permissions.Publish.Allow, want.Publish) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe) {
					t.Errorf("user %s: permissions %+v %+v, want %+v", r, u.Permissions.Publish, u.Permissions.Subscribe, want)
				}
			}
		})
	}
}

// TestNATSServerEnforcesTheRoles runs a nats-server on the rendered dev
// config: a role's client connects over TLS verified with the chart's CA
// and its own password, the watcher declares and writes mesh-observed, and
// the edge may not write it.
func TestNATSServerEnforcesTheRoles(t *testing.T) {
	f := renderNATS(t, valuesFile(t, "values-dev.yaml"))
	opts, err := server.ProcessConfigFile(f.conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	watcher := connect(t, f, bus.RoleWatcher, f.secrets["osm-nats-user-watcher/password"])
	kv, err := bus.EnsureBucket(ctx, watcher, bus.BucketObserved, bus.BucketOptions{Replicas: 1})
	if err != nil {
		t.Fatalf("the watcher declares %s: %v", bus.BucketObserved, err)
	}
	if _, err := kv.Put(ctx, "probe", []byte("1")); err != nil {
		t.Fatalf("the watcher writes %s: %v", bus.BucketObserved, err)
	}

	edge := connect(t, f, bus.RoleEdge, f.secrets["osm-nats-user-edge/password"])
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if _, err := edge.Publish(pctx, "$KV."+bus.BucketObserved+".probe", []byte("2")); err == nil {
		t.Fatalf("the edge wrote %s", bus.BucketObserved)
	}
	if e, err := kv.Get(ctx, "probe"); err != nil || string(e.Value()) != "1" {
		t.Fatalf("%s/probe after the edge's attempt: %v %v", bus.BucketObserved, e, err)
	}

	// A wrong password is refused.
	if _, err := nats.Connect(fmt.Sprintf("tls://127.0.0.1:%d", f.client), nats.Secure(tlsFor(t, f)),
		nats.UserInfo(string(bus.RoleWatcher), "wrong"), nats.Timeout(5*time.Second)); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// connect opens a JetStream client of role with the password, as the
// services do (the role's inbox prefix), verifying the server with the
// chart's NATS CA.
func connect(t *testing.T, f natsFiles, role bus.Role, password []byte) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("tls://127.0.0.1:%d", f.client), nats.Secure(tlsFor(t, f)),
		nats.UserInfo(string(role), string(password)), nats.CustomInboxPrefix(role.InboxPrefix()),
		nats.Timeout(5*time.Second), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// tlsFor verifies the server against the chart's NATS CA (osm-nats-ca,
// what clients mount) under the client Service's name.
func tlsFor(t *testing.T, f natsFiles) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.secrets["osm-nats-ca/ca.crt"]) {
		t.Fatal("osm-nats-ca holds no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: f.serverTLS, MinVersion: tls.VersionTLS12}
}
