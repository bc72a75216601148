package stack

import (
	"context"
	"fmt"
)

// Instance is a further process of a component on listeners of its own.
type Instance struct {
	Proc *Proc
	// Admin is its admin listener's address, Addr its serving one (empty
	// for components that serve nothing besides the admin listener).
	Admin, Addr string
}

// StartInstance starts another process of the running component c with
// the same flags but its own admin and serving listeners, and extra flags
// (a later flag wins, e.g. a pod name of its own), and waits until it is
// ready: a second edge replica behind the same Service, say. Close stops
// it, as does the caller when it wants (Proc.Kill for a crash).
func (m *Mesh) StartInstance(ctx context.Context, c Component, extra ...string) (*Instance, error) {
	if m.running[c] == nil {
		return nil, fmt.Errorf("stack: %s is not running", c)
	}
	bin, err := m.o.Builder.Build(ctx, string(c))
	if err != nil {
		return nil, err
	}
	inst := &Instance{}
	if inst.Admin, err = FreeAddr(); err != nil {
		return nil, err
	}
	if c.serves() {
		if inst.Addr, err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	p, err := Start(string(c), bin, append(m.args(c, inst.Admin, inst.Addr), extra...), m.env(c), m.o.Log)
	if err != nil {
		return nil, err
	}
	m.procs = append(m.procs, p)
	inst.Proc = p
	if err := p.WaitReady(ctx, inst.Admin, m.o.ReadyTimeout); err != nil {
		return nil, fmt.Errorf("%s instance: %w\n%s", c, err, p.Output())
	}
	return inst, nil
}
