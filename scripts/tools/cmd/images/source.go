package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// source is what an image records about the tree it was built from.
type source struct {
	// Root is the repository's top-level directory.
	Root string
	// Revision is the full commit hash of HEAD.
	Revision string
	// Time is HEAD's committer time: the images' created time and the
	// modification time of every file in their layers.
	Time time.Time
	// Dirty is true when the work tree differs from HEAD (tracked changes or
	// untracked files that are not ignored).
	Dirty bool
	// Version is `git describe --tags --always --abbrev=12 --match 'v[0-9]*'`,
	// with "-dirty" appended when Dirty.
	Version string
}

// readSource reads the commit, its time and the tree's state from the git
// repository that holds dir.
func readSource(ctx context.Context, dir string) (source, error) {
	var s source
	var err error
	if s.Root, err = git(ctx, dir, "rev-parse", "--show-toplevel"); err != nil {
		return s, err
	}
	if s.Revision, err = git(ctx, s.Root, "rev-parse", "--verify", "HEAD^{commit}"); err != nil {
		return s, err
	}
	ct, err := git(ctx, s.Root, "show", "-s", "--format=%ct", "HEAD")
	if err != nil {
		return s, err
	}
	sec, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return s, fmt.Errorf("commit time %q of HEAD in %s: %w", ct, s.Root, err)
	}
	s.Time = time.Unix(sec, 0).UTC()
	status, err := git(ctx, s.Root, "status", "--porcelain", "--untracked-files=normal")
	if err != nil {
		return s, err
	}
	s.Dirty = status != ""
	if s.Version, err = git(ctx, s.Root, "describe", "--tags", "--always", "--abbrev=12", "--match", "v[0-9]*"); err != nil {
		return s, err
	}
	if s.Dirty {
		s.Version += "-dirty"
	}
	return s, nil
}

// git runs git in dir and returns its trimmed standard output.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
