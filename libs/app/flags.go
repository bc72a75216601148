package app

import (
	"flag"
	"fmt"
	"io"
	"os"
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
	// redact shows the values of flags registered with Redacted.
	redact map[string]func(string) string
	order  []string
	// aliases maps each deprecated name to the flag it stands for, in
	// aliasOrder; used lists the deprecated names a parse met.
	aliases    map[string]string
	aliasOrder []string
	used       []string
}

func newFlags(name string) *Flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &Flags{fs: fs, secret: map[string]bool{}, redact: map[string]func(string) string{}, aliases: map[string]string{}}
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

// Redacted registers a string flag that may carry a secret inside it (a URL
// with user information): it is logged and printed only through redact.
func (f *Flags) Redacted(p *string, name, value, usage string, redact func(string) string) {
	f.String(p, name, value, usage)
	f.redact[name] = redact
}

// shown is how a flag's value may appear in a log or an error.
func (f *Flags) shown(name, v string) string {
	switch {
	case f.secret[name] && v != "":
		return "<redacted>"
	case f.redact[name] != nil:
		return f.redact[name](v)
	}
	return v
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

// Deprecated registers old as a deprecated name of the flag current, which
// must be registered already: --old and its environment twin set --current.
// A name stays deprecated for one release; the runner logs a warning
// naming both whenever the old name is used, and --help lists it.
func (f *Flags) Deprecated(old, current string) {
	fl := f.fs.Lookup(current)
	if fl == nil {
		panic("app: deprecated flag " + old + " names an unregistered flag " + current)
	}
	f.fs.Var(fl.Value, old, "deprecated: use --"+current)
	f.aliases[old] = current
	f.aliasOrder = append(f.aliasOrder, old)
}

// Deprecation is a deprecated flag name that was used, and the name that
// replaces it.
type Deprecation struct{ Old, Current string }

// Deprecations lists, for the runner to log, each deprecated flag name the
// parse met, on the command line or in the environment.
func (f *Flags) Deprecations() []Deprecation {
	out := make([]Deprecation, 0, len(f.used))
	for _, old := range f.used {
		out = append(out, Deprecation{Old: old, Current: f.aliases[old]})
	}
	return out
}

// parse reads args, then the environment for every flag args did not set.
// On the command line the last of a flag's names given wins; in the
// environment the flag's own name wins over a deprecated one.
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
	f.fs.Visit(func(fl *flag.Flag) {
		set[fl.Name] = true
		if current, ok := f.aliases[fl.Name]; ok {
			f.used = append(f.used, fl.Name)
			set[current] = true
		}
	})
	envOf := map[string]string{}
	for _, name := range f.order {
		envOf[name] = name
	}
	for _, old := range f.aliasOrder {
		current := f.aliases[old]
		if set[current] || getenv(EnvName(current)) != "" || getenv(EnvName(old)) == "" {
			continue
		}
		envOf[current] = old
		f.used = append(f.used, old)
	}
	for _, name := range f.order {
		if set[name] {
			continue
		}
		env := EnvName(envOf[name])
		v := getenv(env)
		if v == "" {
			continue
		}
		if err := f.fs.Set(name, v); err != nil {
			return fmt.Errorf("invalid value %q for %s (flag --%s): %v", f.shown(name, v), env, name, err)
		}
	}
	return nil
}

// Effective returns the flag values, secrets redacted, for logging once at
// start.
func (f *Flags) Effective() map[string]string {
	out := make(map[string]string, len(f.order))
	for _, name := range f.order {
		out[name] = f.shown(name, f.fs.Lookup(name).Value.String())
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
	if len(f.aliasOrder) == 0 {
		return
	}
	fmt.Fprintf(w, "\nDeprecated names, accepted for one release (each sets the flag it names and logs a warning):\n")
	old := append([]string{}, f.aliasOrder...)
	sort.Strings(old)
	for _, name := range old {
		fmt.Fprintf(w, "  --%s, env %s: use --%s\n", name, EnvName(name), f.aliases[name])
	}
}

// SplitList splits a comma-separated list, a flag's value or an
// annotation's, trimming spaces and dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// FlagError is a configuration error that names its flag.
func FlagError(name, format string, args ...any) error {
	return fmt.Errorf("--%s (%s): %s", name, EnvName(name), fmt.Sprintf(format, args...))
}

// FlagPair checks two flags that are given together or not at all, such
// as a certificate file and its key: the error names the one missing.
func FlagPair(name, value, otherName, otherValue string) error {
	switch {
	case value == "" && otherValue != "":
		return FlagError(name, "is required with --%s", otherName)
	case value != "" && otherValue == "":
		return FlagError(otherName, "is required with --%s", name)
	}
	return nil
}

// FlagFiles checks that the file each flag names exists; it takes
// flag names and paths in turn, and skips an empty path.
func FlagFiles(namesAndPaths ...string) error {
	for i := 0; i+1 < len(namesAndPaths); i += 2 {
		name, path := namesAndPaths[i], namesAndPaths[i+1]
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return FlagError(name, "%v", err)
		}
	}
	return nil
}

// KVReplicas registers --kv-replicas, the stream replicas of the KV buckets
// the component declares as their one writer; CheckKVReplicas validates it.
func (f *Flags) KVReplicas(p *int) {
	f.Int(p, "kv-replicas", 1, "replicas of the KV buckets this component writes, when it declares them: 1 with one NATS server, 3 in a NATS cluster (at most 5)")
}

// CheckKVReplicas checks --kv-replicas.
func CheckKVReplicas(n int) error {
	if n < 1 || n > 5 {
		return FlagError("kv-replicas", "must be 1 to 5, got %d", n)
	}
	return nil
}
