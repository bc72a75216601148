package stack

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/bus/bustest"
)

// NATSOptions configure the mesh's embedded NATS server.
type NATSOptions struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// StoreDir keeps the JetStream data across restarts; empty uses a
	// temporary directory that Close removes.
	StoreDir string
	// Passwords of the role users (user name = role name); a role left out
	// gets one from PasswordFile, else a random one.
	Passwords map[bus.Role]string
	// PasswordFile, when set, keeps the passwords in this JSON file (role
	// to password), so that a restart keeps the credentials: the roles it
	// lacks are added to it.
	PasswordFile string
}

// NATS is an embedded NATS server with JetStream, one user per role with
// the role's permissions, and the mesh buckets declared.
type NATS struct {
	srv   *bustest.Server
	pw    map[bus.Role]string
	admin *bus.Conn
}

// StartNATS starts the server, declares the mesh buckets and keeps an
// admin connection open.
func StartNATS(ctx context.Context, o NATSOptions) (*NATS, error) {
	pw, err := passwords(o)
	if err != nil {
		return nil, err
	}
	srv, err := bustest.Start(bustest.Options{Port: o.Port, StoreDir: o.StoreDir, Passwords: pw})
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	n := &NATS{srv: srv, pw: pw}
	n.admin, err = n.Connect(ctx, bus.RoleAdmin, "osm-stack")
	if err == nil {
		err = bus.EnsureBuckets(ctx, n.admin.JetStream(), bus.BucketOptions{})
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("nats admin: %w", err)
	}
	return n, nil
}

// passwords are the role users' passwords: o.Passwords, then those in
// o.PasswordFile, then random ones, which are added to the file.
func passwords(o NATSOptions) (map[bus.Role]string, error) {
	saved := map[bus.Role]string{}
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err == nil {
			err = json.Unmarshal(b, &saved)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("nats passwords: %w", err)
		}
	}
	pw, changed := map[bus.Role]string{}, false
	for _, r := range bus.Roles() {
		pw[r] = cmp.Or(o.Passwords[r], saved[r])
		if pw[r] == "" {
			s, err := randomHex(16)
			if err != nil {
				return nil, err
			}
			pw[r], saved[r], changed = s, s, true
		}
	}
	if o.PasswordFile != "" && changed {
		b, _ := json.MarshalIndent(saved, "", "  ")
		if err := os.WriteFile(o.PasswordFile, b, 0o600); err != nil {
			return nil, fmt.Errorf("nats passwords: %w", err)
		}
	}
	return pw, nil
}

// URL is the server's client URL.
func (n *NATS) URL() string { return n.srv.URL() }

// Password returns the password of role's user.
func (n *NATS) Password(r bus.Role) string { return n.pw[r] }

// Passwords returns every role user's password.
func (n *NATS) Passwords() map[bus.Role]string { return maps.Clone(n.pw) }

// Connect opens a connection as role's user, named name.
func (n *NATS) Connect(ctx context.Context, r bus.Role, name string) (*bus.Conn, error) {
	c, err := bus.Connect(ctx, bus.Options{URL: n.URL(), Name: name, Role: r, User: string(r), Password: n.pw[r]})
	if err != nil {
		return nil, fmt.Errorf("connect to nats as %s: %w", r, err)
	}
	return c, nil
}

// Admin is the admin connection the server was started with.
func (n *NATS) Admin() *bus.Conn { return n.admin }

// Close closes the admin connection and stops the server.
func (n *NATS) Close() {
	if n.admin != nil {
		n.admin.Close()
	}
	n.srv.Shutdown()
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
