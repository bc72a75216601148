// Package netns runs a test binary inside a network namespace of its own,
// so that tests can carry real traffic to pod IPs without touching the
// host's interfaces.
//
// A TestMain hands over to Main:
//
//	func TestMain(m *testing.M) {
//		os.Exit(netns.Main(m, netns.Options{Addrs: []netip.Prefix{netip.MustParsePrefix("10.244.1.10/32")}}))
//	}
//
// Main runs the test binary again, with the same arguments, in a new
// network namespace (clone with CLONE_NEWNET). There the copy brings its
// loopback interface up and puts Options.Addrs on it, then runs the tests.
// Everything the tests start (servers, processes) inherits the namespace:
// 127.0.0.1 and the pod IPs reach each other, nothing else is reachable,
// and the addresses vanish with the namespace when the last process in it
// exits. The outer process only relays signals and returns the copy's exit
// code.
//
// Making a network namespace needs CAP_SYS_ADMIN (root; CI runs as root).
// Without it Main runs the tests where they are and Require skips each
// test that needs the namespace, saying why.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// Environment of the copy inside the namespace.
const (
	// envInside marks the copy; its value is the outer process's
	// network namespace (the link /proc/self/ns/net), which the copy's
	// must differ from.
	envInside = "OSM_NETNS_INSIDE"
	// envAddrs lists the prefixes the copy puts on its loopback, comma
	// separated.
	envAddrs = "OSM_NETNS_ADDRS"
)

// Options configure Main.
type Options struct {
	// Addrs are put on the namespace's loopback interface (IPv4 only):
	// the pod IPs the tests serve and call, e.g. 10.244.1.10/32.
	Addrs []netip.Prefix
	// Prepare, when set, runs in the outer process before the copy starts,
	// and only when the namespace can be made: work that needs the host's
	// network, such as builds that may download modules. The environment
	// it returns is the copy's too; cleanup (may be nil) runs after the
	// copy has exited.
	Prepare func(ctx context.Context) (env map[string]string, cleanup func(), err error)
	// Run runs the tests inside the namespace; nil runs m.Run. It runs
	// also when the namespace cannot be made (Require then skips).
	Run func() int
}

// skipReason is why this process is not inside a namespace of Main's;
// empty inside.
var skipReason = "netns.Main did not run (call it from TestMain)"

// Inside reports whether this process runs inside the namespace Main made.
func Inside() bool { return skipReason == "" }

// Require skips t unless the process runs inside Main's namespace.
func Require(t testing.TB) {
	t.Helper()
	if !Inside() {
		t.Skipf("needs a network namespace of its own: %s", skipReason)
	}
}

// Main runs the tests of m inside a new network namespace (see the package
// documentation) and returns the exit code for os.Exit.
func Main(m *testing.M, o Options) int {
	run := o.Run
	if run == nil {
		run = m.Run
	}
	if outer, ok := os.LookupEnv(envInside); ok {
		if err := enter(outer); err != nil {
			fmt.Fprintln(os.Stderr, "netns:", err)
			return 1
		}
		skipReason = ""
		return run()
	}
	if err := probe(); err != nil {
		skipReason = fmt.Sprintf("this process cannot make a network namespace (%v); run as root (CI does) or with CAP_SYS_ADMIN", err)
		fmt.Fprintln(os.Stderr, "netns:", skipReason)
		return run()
	}
	env := map[string]string{}
	if o.Prepare != nil {
		e, cleanup, err := o.Prepare(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, "netns: prepare:", err)
			return 1
		}
		if cleanup != nil {
			defer cleanup()
		}
		env = e
	}
	code, err := reexec(o.Addrs, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns:", err)
		return 1
	}
	return code
}

// reexec runs this binary again with the same arguments in a new network
// namespace and returns its exit code.
func reexec(addrs []netip.Prefix, env map[string]string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	outer, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("this process's network namespace: %w", err)
	}
	var list []string
	for _, p := range addrs {
		if !p.Addr().Is4() {
			return 0, fmt.Errorf("address %s: only IPv4 is supported", p)
		}
		list = append(list, p.String())
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInside+"="+outer, envAddrs+"="+strings.Join(list, ","))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = sysProcAttr()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run the tests in a new network namespace: %w", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 0, fmt.Errorf("the tests in the network namespace died of %v", ws.Signal())
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

// enter finishes the copy's namespace: it checks the namespace is not the
// outer process's, brings lo up and puts the addresses of $OSM_NETNS_ADDRS
// on it.
func enter(outer string) error {
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("this process's network namespace: %w", err)
	}
	if own == outer {
		return fmt.Errorf("%s is set but the process runs in the outer network namespace %s", envInside, own)
	}
	var addrs []netip.Prefix
	if s := os.Getenv(envAddrs); s != "" {
		for _, f := range strings.Split(s, ",") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return fmt.Errorf("%s: %w", envAddrs, err)
			}
			addrs = append(addrs, p)
		}
	}
	return setupLoopback(addrs)
}

// Outer is the outer process's network namespace as the link
// /proc/self/ns/net names it (e.g. net:[4026531840]); empty outside Main's
// namespace.
func Outer() string {
	if !Inside() {
		return ""
	}
	return os.Getenv(envInside)
}
