package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestFlags: --help prints each command's flags; bad flags and their
// environment twins are refused naming them.
func TestFlags(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" wants errHelp
		wantOut string
	}{
		{name: "help", args: []string{"--help"}, wantOut: "serve   serve bookstore.Books"},
		{name: "serve help", args: []string{"serve", "--help"}, wantOut: "-addr ip:port"},
		{name: "call help", args: []string{"call", "--help"}, wantOut: "-methods comma-separated"},
		{name: "no command", args: nil, wantErr: "a command is required"},
		{name: "unknown command", args: []string{"steal"}, wantErr: `unknown command "steal"`},
		{name: "serve without addr", args: []string{"serve"}, wantErr: "--addr is required (OSM_ADDR)"},
		{name: "serve bad addr", args: []string{"serve", "--addr", "10.244.2.10"}, wantErr: `--addr "10.244.2.10"`},
		{name: "serve bad addr from env", args: []string{"serve"}, env: map[string]string{"OSM_ADDR": "nope"}, wantErr: `--addr "nope"`},
		{name: "serve negative fail attempts", args: []string{"serve", "--addr", "10.244.2.10:14001", "--fail-attempts", "-1"}, wantErr: "--fail-attempts -1 (OSM_FAIL_ATTEMPTS): must not be negative"},
		{name: "serve negative connection age", args: []string{"serve", "--addr", "10.244.2.10:14001", "--max-connection-age", "-1s"}, wantErr: "--max-connection-age -1s (OSM_MAX_CONNECTION_AGE): must not be negative"},
		{name: "call unknown method", args: []string{"call", "--methods", "Get,Steal"}, wantErr: `--methods: unknown method "Steal"`},
		{name: "call bad target", args: []string{"call", "--target", "bookstore:14001"}, wantErr: "--target \"bookstore:14001\": want xds:///host:port"},
		{name: "call bad rate from env", args: []string{"call"}, env: map[string]string{"OSM_RATE": "fast"}, wantErr: "OSM_RATE (--rate)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tc.args, env(tc.env), &out, &errOut)
			if tc.wantErr == "" {
				if !errors.Is(err, errHelp) {
					t.Fatalf("err %v, want the help", err)
				}
				if all := out.String() + errOut.String(); !strings.Contains(all, tc.wantOut) {
					t.Fatalf("help lacks %q:\n%s", tc.wantOut, all)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestTally: the table counts calls by method, backend and result.
func TestTally(t *testing.T) {
	tl := &tally{n: map[key]int{}}
	for _, c := range []Call{
		{Method: "Buy", Backend: "v1", Code: "OK"}, {Method: "Buy", Backend: "v1", Code: "OK"},
		{Method: "Buy", Backend: "-", Code: "PermissionDenied"}, {Method: "Get", Backend: "v2", Code: "OK"},
	} {
		tl.add(c)
	}
	var b bytes.Buffer
	tl.print(&b, 0)
	want := "METHOD  BACKEND  RESULT            CALLS\nBuy     -        PermissionDenied  1\nBuy     v1       OK                2\nGet     v2       OK                1\n"
	if got := b.String(); !strings.HasSuffix(got, want) {
		t.Fatalf("table:\n%s\nwant it to end with:\n%s", got, want)
	}
}
