package command

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestRootHelp: the root's --help, golden.
func TestRootHelp(t *testing.T) {
	golden(t, "help-root.txt", mustOSM(t, "--help"))
}

// TestEveryCommandHasAnExample walks the whole tree, cobra's help and
// completion commands included, and reads each one's --help.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		n++
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%q has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	var out bytes.Buffer
	root := New(Streams{Out: &out, Err: &out})
	walk(root)
	if n < 12 {
		t.Fatalf("walked %d commands; want the whole tree", n)
	}
	for _, args := range [][]string{{"install"}, {"namespace", "list"}, {"completion", "zsh"}} {
		help := mustOSM(t, append(args, "--help")...)
		if !strings.Contains(help, "Examples:") {
			t.Errorf("osm %s --help shows no example:\n%s", strings.Join(args, " "), help)
		}
	}
}

// TestCompletion: cobra's completion scripts, and completion of -o.
func TestCompletion(t *testing.T) {
	if out := mustOSM(t, "completion", "bash"); !strings.Contains(out, "__start_osm") {
		t.Fatalf("osm completion bash is not a bash completion script:\n%.300s", out)
	}
	out := mustOSM(t, "__complete", "namespace", "list", "-o", "")
	for _, f := range outputFormats {
		if !strings.Contains(out, f+"\n") {
			t.Errorf("completion of -o lacks %s:\n%s", f, out)
		}
	}
}

// TestOutputFlagNamesTheValue: -o xml is refused, naming the flag and the
// formats.
func TestOutputFlagNamesTheValue(t *testing.T) {
	_, err := osm(t, "namespace", "list", "-o", "xml")
	if err == nil || !strings.Contains(err.Error(), `--output "xml"`) || !strings.Contains(err.Error(), "table, json, yaml") {
		t.Fatalf("osm namespace list -o xml: %v; want an error naming --output and the formats", err)
	}
}

// TestColourOnlyWhenAsked: the painter adds escape codes only when on; a
// buffer (no terminal) gets none.
func TestColourOnlyWhenAsked(t *testing.T) {
	if got := painter(true).green("✔"); got != "\x1b[32m✔\x1b[0m" {
		t.Fatalf("painter(true).green = %q", got)
	}
	if got := painter(false).green("✔"); got != "✔" {
		t.Fatalf("painter(false).green = %q", got)
	}
	g := &globals{streams: Streams{Out: &bytes.Buffer{}}}
	if g.colour() {
		t.Fatal("colour on for a buffer, which is no terminal")
	}
}
