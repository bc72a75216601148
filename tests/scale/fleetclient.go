package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// fleetProc is the harness's end of the fleet process.
type fleetProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	enc  *json.Encoder
	root string // the file of the fleet CA's root

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan fleetReply
	exited  chan struct{}
	err     error
}

// startFleet starts the fleet with command (its first element the
// program), its environment carrying EnvFleet, and waits for its first
// reply, after which the root file exists. Its stderr goes to logw.
func startFleet(ctx context.Context, command []string, dir string, logw io.Writer) (*fleetProc, error) {
	f := &fleetProc{root: filepath.Join(dir, "proxies-root.pem"), waiting: map[int]chan fleetReply{}, exited: make(chan struct{}), nextID: 1}
	f.cmd = exec.Command(command[0], command[1:]...)
	f.cmd.Env = append(os.Environ(), EnvFleet+"="+f.root)
	f.cmd.Stderr = logw
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if f.in, err = f.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f.enc = json.NewEncoder(f.in)
	ready := make(chan fleetReply, 1)
	f.waiting[0] = ready
	if err := f.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the proxies' process %s: %w", command[0], err)
	}
	go f.read(out)
	select {
	case r := <-ready:
		if r.Err != "" {
			return nil, errors.New(r.Err)
		}
	case <-f.exited:
		return nil, fmt.Errorf("the proxies' process exited at start: %v", f.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		return nil, errors.New("the proxies' process did not answer within a minute")
	}
	return f, nil
}

func (f *fleetProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for sc.Scan() {
		var r fleetReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // not ours (a library printing to stdout)
		}
		f.mu.Lock()
		ch := f.waiting[r.ID]
		delete(f.waiting, r.ID)
		f.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	f.err = f.cmd.Wait()
	close(f.exited)
}

// send sends req and returns the channel its reply arrives on.
func (f *fleetProc) send(req fleetRequest) (<-chan fleetReply, error) {
	ch := make(chan fleetReply, 1)
	f.mu.Lock()
	req.ID = f.nextID
	f.nextID++
	f.waiting[req.ID] = ch
	err := f.enc.Encode(req)
	f.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("the proxies' process: %w", err)
	}
	return ch, nil
}

// call sends req and waits for its reply.
func (f *fleetProc) call(ctx context.Context, req fleetRequest) (fleetReply, error) {
	ch, err := f.send(req)
	if err != nil {
		return fleetReply{}, err
	}
	return f.await(ctx, ch)
}

func (f *fleetProc) await(ctx context.Context, ch <-chan fleetReply) (fleetReply, error) {
	select {
	case r := <-ch:
		if r.Err != "" {
			return r, errors.New(r.Err)
		}
		return r, nil
	case <-f.exited:
		return fleetReply{}, fmt.Errorf("the proxies' process exited: %v", f.err)
	case <-ctx.Done():
		return fleetReply{}, ctx.Err()
	}
}

// Pid is the fleet's process id.
func (f *fleetProc) Pid() int { return f.cmd.Process.Pid }

// stop closes the fleet's stdin, which ends it, and kills it after 30 s.
func (f *fleetProc) stop() {
	f.in.Close()
	select {
	case <-f.exited:
	case <-time.After(30 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exited
	}
}
