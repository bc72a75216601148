package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// newFlags is a flag set for command cmd whose --help prints about and the
// flags, each of which also reads its environment twin OSM_<FLAG> (dashes
// as underscores) when not given.
func newFlags(cmd, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bookstore-grpc %s [flags]\n\n%s\nFlags (each also read from OSM_<FLAG> when not given):\n", cmd, about)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, then sets every flag not given from its environment
// twin; an unusable twin is an error naming it.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "OSM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && !given[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s (--%s): %w", env, f.Name, e)
			}
		}
	})
	return err
}
