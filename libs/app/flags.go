package app

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Flags registers command-line flags that each have an environment twin:
// --nats-url is also read from OSM_NATS_URL. A flag given on the command line
// wins over the environment.
type Flags struct {
	fs     *flag.FlagSet
	secret map[string]bool
	order  []string
}

func newFlags(name string) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &Flags{fs: fs, secret: map[string]bool{}}
}

// EnvName is the environment variable twin of a flag name.
func EnvName(flagName string) string {
	return "OSM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *Flags) add(name string) { f.order = append(f.order, name) }

// String registers a string flag.
func (f *Flags) String(p *string, name, value, usage string) {
	f.fs.StringVar(p, name, value, usage)
	f.add(name)
}

// Secret registers a string flag whose value is never logged or printed.
func (f *Flags) Secret(p *string, name, usage string) {
	f.fs.StringVar(p, name, "", usage)
	f.secret[name] = true
	f.add(name)
}

// Bool registers a boolean flag.
func (f *Flags) Bool(p *bool, name string, value bool, usage string) {
	f.fs.BoolVar(p, name, value, usage)
	f.add(name)
}

// Int registers an integer flag.
func (f *Flags) Int(p *int, name string, value int, usage string) {
	f.fs.IntVar(p, name, value, usage)
	f.add(name)
}

// Duration registers a duration flag ("30s", "24h").
func (f *Flags) Duration(p *time.Duration, name string, value time.Duration, usage string) {
	f.fs.DurationVar(p, name, value, usage)
	f.add(name)
}

// parse reads args, then the environment for every flag args did not set.
func (f *Flags) parse(args []string, getenv func(string) string) error {
	if err := f.fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w (see --help)", err)
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", f.fs.Arg(0))
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, name := range f.order {
		if set[name] {
			continue
		}
		v := getenv(EnvName(name))
		if v == "" {
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			shown := v
			if f.secret[name] {
				shown = "<redacted>"
			}
			return fmt.Errorf("invalid value %q for %s (flag --%s): %v", shown, EnvName(name), name, err)
		}
	}
	return nil
}

// Effective returns the flag values, secrets redacted, for logging once at
// start.
func (f *Flags) Effective() map[string]string {
	out := make(map[string]string, len(f.order))
	for _, name := range f.order {
		v := f.fs.Lookup(name).Value.String()
		if f.secret[name] && v != "" {
			v = "<redacted>"
		}
		out[name] = v
	}
	return out
}

// usage writes the help text: every flag with its environment twin, type and
// default, sorted by name.
func (f *Flags) usage(w io.Writer) {
	names := append([]string{}, f.order...)
	sort.Strings(names)
	for _, name := range names {
		fl := f.fs.Lookup(name)
		typ, usage := flag.UnquoteUsage(fl)
		line := "  --" + name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s\n      env %s", line, usage, EnvName(name))
		if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" && !f.secret[name] {
			fmt.Fprintf(w, "; default %s", fl.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// FlagError is a configuration error that names its flag.
func FlagError(name, format string, args ...any) error {
	return fmt.Errorf("--%s (%s): %s", name, EnvName(name), fmt.Sprintf(format, args...))
}
