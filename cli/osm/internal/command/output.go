package command

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// outputFormats are the values of -o on read commands.
var outputFormats = []string{"table", "json", "yaml"}

// addOutputFlag adds -o/--output to a read command.
func addOutputFlag(cmd *cobra.Command, into *string) {
	cmd.Flags().StringVarP(into, "output", "o", "table", "output format: "+strings.Join(outputFormats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
}

// checkOutput fails on an -o value other than table, json or yaml.
func checkOutput(format string) error {
	for _, f := range outputFormats {
		if format == f {
			return nil
		}
	}
	return fmt.Errorf("--output %q: want one of %s", format, strings.Join(outputFormats, ", "))
}

// table is what a read command prints: its rows for the table form and its
// value for json and yaml.
type table struct {
	header []string
	rows   [][]string
	value  any
}

// print writes t in format (checked by checkOutput). The table has no
// colour: escape codes would upset the column widths.
func (t table) print(w io.Writer, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(t.value, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(t.value)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}
