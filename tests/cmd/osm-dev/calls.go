package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Results of a call as the table groups them.
const (
	resultOK     = "ok"
	resultDenied = "PermissionDenied"
	resultOther  = "other"
)

// outcome is a call's answering backend version ("-" when none answered)
// and result.
type outcome struct{ backend, result string }

// callLine is the part of a bookstore-grpc call --json line the dev stack
// reads (the command's Call type).
type callLine struct {
	UnixNano int64  `json:"unix_nano"`
	Backend  string `json:"backend"`
	Code     string `json:"code"`
	Error    string `json:"error"`
}

// window is how far back the live counts reach.
const window = time.Second

// callStats counts a client's calls from its JSON lines: in total, and in
// 100 ms buckets for the last window. It is the client's stdout.
type callStats struct {
	mu      sync.Mutex
	partial []byte
	total   map[outcome]int
	buckets map[int64]map[outcome]int // start of the bucket (unix ms / 100) -> counts
	// lastOther is the latest call that was neither ok nor denied: its
	// code and message, and when it started.
	lastOther   string
	lastOtherAt time.Time
	// lines holds the last lines that were not calls (errors of the
	// client itself).
	lines []string
}

func newCallStats() *callStats {
	return &callStats{total: map[outcome]int{}, buckets: map[int64]map[outcome]int{}}
}

// Write takes the client's output, a JSON line per call.
func (s *callStats) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := s.partial[:i]
		var c callLine
		if len(line) > 0 && line[0] == '{' && json.Unmarshal(line, &c) == nil && c.Code != "" {
			s.add(c)
		} else if len(line) > 0 {
			s.lines = append(s.lines, string(line))
			if len(s.lines) > 20 {
				s.lines = s.lines[1:]
			}
		}
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

func (s *callStats) add(c callLine) {
	o := outcome{backend: c.Backend, result: resultOther}
	switch c.Code {
	case "OK":
		o.result = resultOK
	case "PermissionDenied":
		o.result = resultDenied
	default:
		s.lastOther = c.Code + ": " + c.Error
		s.lastOtherAt = time.Unix(0, c.UnixNano)
	}
	if o.backend == "" {
		o.backend = "-"
	}
	s.total[o]++
	b := time.Unix(0, c.UnixNano).UnixMilli() / 100
	if s.buckets[b] == nil {
		s.buckets[b] = map[outcome]int{}
		for k := range s.buckets {
			if k <= b-int64(window/(100*time.Millisecond)) {
				delete(s.buckets, k)
			}
		}
	}
	s.buckets[b][o]++
}

// totals are the counts since the start.
func (s *callStats) totals() map[outcome]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[outcome]int, len(s.total))
	for k, v := range s.total {
		out[k] = v
	}
	return out
}

// recent are the counts of the calls started in the last window before
// now.
func (s *callStats) recent(now time.Time) map[outcome]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[outcome]int{}
	from := now.Add(-window).UnixMilli() / 100
	for b, m := range s.buckets {
		if b > from {
			for k, v := range m {
				out[k] += v
			}
		}
	}
	return out
}

// other is the latest call that was neither ok nor denied, if it started
// after since.
func (s *callStats) other(since time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastOtherAt.After(since) {
		return s.lastOther
	}
	return ""
}

// output is the client's last lines that were not calls.
func (s *callStats) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// sum counts the calls of m with result r (any result when r is empty)
// and backend b (any backend when b is empty).
func sum(m map[outcome]int, b, r string) int {
	n := 0
	for k, v := range m {
		if (b == "" || k.backend == b) && (r == "" || k.result == r) {
			n += v
		}
	}
	return n
}

// diff is later minus earlier, per outcome.
func diff(later, earlier map[outcome]int) map[outcome]int {
	out := map[outcome]int{}
	for k, v := range later {
		if d := v - earlier[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// pct is 100 n/of, formatted; "-" when of is 0.
func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}
