package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Call is one call's outcome, as --json prints it.
type Call struct {
	// UnixNano is when the call started.
	UnixNano int64 `json:"unix_nano"`
	// Micros is how long it took.
	Micros int64  `json:"micros"`
	Method string `json:"method"`
	// Backend is the version that answered; "-" when none did.
	Backend string `json:"backend"`
	// Caller is the SPIFFE id the server saw.
	Caller string `json:"caller,omitempty"`
	// CallerSerial is the serial number (hex) of the client certificate
	// the server saw.
	CallerSerial string `json:"caller_serial,omitempty"`
	// Attempt is the attempt of the call the server answered (1 unless
	// the client retried).
	Attempt int `json:"attempt,omitempty"`
	// Code is the gRPC status code, e.g. OK or PermissionDenied.
	Code  string `json:"code"`
	Error string `json:"error,omitempty"`
}

// key is a row of the table.
type key struct{ method, backend, code string }

// tally counts calls by method, backend and result.
type tally struct {
	mu sync.Mutex
	n  map[key]int
}

func (t *tally) add(c Call) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[key{c.Method, c.Backend, c.Code}]++
}

// print writes the table: one row per method, backend and result.
func (t *tally) print(w io.Writer, since time.Duration) {
	t.mu.Lock()
	keys := make([]key, 0, len(t.n))
	for k := range t.n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		return strings.Compare(a.method+"\x00"+a.backend+"\x00"+a.code, b.method+"\x00"+b.backend+"\x00"+b.code)
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "after %s\nMETHOD\tBACKEND\tRESULT\tCALLS\n", since.Round(time.Millisecond))
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", k.method, k.backend, k.code, t.n[k])
	}
	t.mu.Unlock()
	_ = tw.Flush()
}

func call(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("call", `Calls bookstore.Books at --target through gRPC's xDS resolver, one call at a
time at --rate, and prints a table of calls per method, answering backend
version and result (gRPC status code) every --report and at the end.`, stderr)
	target := fs.String("target", "xds:///bookstore.bookstore:14001", "the `xds:///host:port` to call (a Service's name and port as the mesh names it)")
	methodList := fs.String("methods", "Buy", "`comma-separated` methods of bookstore.Books, called in turn (Get, Buy)")
	rate := fs.Float64("rate", 10, "calls per second; 0 calls back to back")
	count := fs.Int("count", 0, "stop after this many calls; 0 calls until SIGTERM")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of each call")
	report := fs.Duration("report", 5*time.Second, "print the table at this interval (and at the end); 0 prints it at the end only")
	jsonOut := fs.Bool("json", false, "print each call as a JSON line on stdout; the table goes to stderr")
	book := fs.String("book", "The Go Programming Language", "the book asked for")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if !strings.HasPrefix(*target, "xds:///") {
		return fmt.Errorf("--target %q: want xds:///host:port", *target)
	}
	var ms []string
	for _, m := range strings.Split(*methodList, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if !slices.Contains(methods, m) {
			return fmt.Errorf("--methods: unknown method %q (bookstore.Books has %s)", m, strings.Join(methods, ", "))
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		return errors.New("--methods: at least one method is required")
	}
	if *rate < 0 || *count < 0 || *timeout <= 0 || *report < 0 {
		return errors.New("--rate, --count and --report must not be negative, --timeout must be positive")
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return fmt.Errorf("xds client credentials: %w", err)
	}
	cc, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("--target %s (is $GRPC_XDS_BOOTSTRAP set?): %w", *target, err)
	}
	defer cc.Close()

	table := stdout
	if *jsonOut {
		table = stderr
	}
	enc := json.NewEncoder(stdout)
	t := &tally{n: map[key]int{}}
	start := time.Now()
	var tick <-chan time.Time
	if *rate > 0 {
		tk := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer tk.Stop()
		tick = tk.C
	}
	var reports <-chan time.Time
	if *report > 0 {
		rt := time.NewTicker(*report)
		defer rt.Stop()
		reports = rt.C
	}
	for i := 0; *count == 0 || i < *count; i++ {
		if i > 0 && tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		}
		select {
		case <-reports:
			t.print(table, time.Since(start))
		default:
		}
		if ctx.Err() != nil {
			break
		}
		c := invoke(ctx, cc, ms[i%len(ms)], *book, *timeout)
		if ctx.Err() != nil && c.Code == "Canceled" {
			break
		}
		t.add(c)
		if *jsonOut {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
	}
	t.print(table, time.Since(start))
	return nil
}

// invoke makes one call of method and reports its outcome.
func invoke(ctx context.Context, cc *grpc.ClientConn, method, book string, timeout time.Duration) Call {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := Call{UnixNano: time.Now().UnixNano(), Method: method, Backend: "-"}
	out := &wrapperspb.StringValue{}
	err := cc.Invoke(ctx, "/"+ServiceName+"/"+method, wrapperspb.String(book), out)
	c.Micros = time.Since(time.Unix(0, c.UnixNano)).Microseconds()
	c.Code = status.Code(err).String()
	if err != nil {
		c.Error = status.Convert(err).Message()
		return c
	}
	// "<version> <caller> <serial> <attempt>"
	f := append(strings.Fields(out.GetValue()), "", "", "", "")
	c.Backend, c.Caller, c.CallerSerial = f[0], f[1], f[2]
	c.Attempt, _ = strconv.Atoi(f[3])
	return c
}
