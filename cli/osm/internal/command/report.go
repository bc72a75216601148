package command

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// result is one check of osm check or osm verify.
type result struct {
	// Category groups the checks in the table form.
	Category string `json:"category"`
	// Check says what was checked, and what was found.
	Check string `json:"check"`
	OK    bool   `json:"ok"`
	// Hint says what to do about a failed check.
	Hint string `json:"hint,omitempty"`
}

// report is the outcome of a run of checks, in the order they ran.
type report struct {
	Results []result `json:"results"`
	// Failed counts the results that are not OK.
	Failed int `json:"failed"`
}

// add records a result in category.
func (r *report) add(category string, ok bool, hint, format string, args ...any) {
	r.Results = append(r.Results, result{Category: category, Check: fmt.Sprintf(format, args...), OK: ok, Hint: hint})
	if !ok {
		r.Failed++
	}
}

// pass and fail are add with ok set.
func (r *report) pass(category, format string, args ...any) {
	r.add(category, true, "", format, args...)
}

func (r *report) fail(category, hint, format string, args ...any) {
	r.add(category, false, hint, format, args...)
}

// print writes the report in format: for the table form, linkerd check's
// layout (a heading per category, ✔ or ✘ per check, the hint indented
// under a failure), coloured by p.
func (r *report) print(w io.Writer, format string, p painter) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	last := ""
	for _, res := range r.Results {
		if res.Category != last {
			if last != "" {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "%s\n%s\n", res.Category, strings.Repeat("-", len(res.Category)))
			last = res.Category
		}
		if res.OK {
			fmt.Fprintf(w, "%s %s\n", p.green("✔"), res.Check)
			continue
		}
		fmt.Fprintf(w, "%s %s\n", p.red("✘"), res.Check)
		if res.Hint != "" {
			for _, l := range strings.Split(res.Hint, "\n") {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	fmt.Fprintln(w)
	if r.Failed == 0 {
		fmt.Fprintf(w, "Status: %s all %d checks passed\n", p.green("✔"), len(r.Results))
	} else {
		fmt.Fprintf(w, "Status: %s %d of %d checks failed\n", p.red("✘"), r.Failed, len(r.Results))
	}
	return nil
}

// err is the command's error: nil when every check passed, else one that
// makes the exit code non-zero.
func (r *report) err(command string) error {
	if r.Failed == 0 {
		return nil
	}
	return fmt.Errorf("%s: %d of %d checks failed", command, r.Failed, len(r.Results))
}
