package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// screen is the dev stack's output while it runs: lines (the proxies'
// updates) and the live traffic table. On a terminal the table stays
// below the lines and is redrawn in place; elsewhere each table is
// printed after the last.
type screen struct {
	mu  sync.Mutex
	out io.Writer
	tty bool
	// width is the terminal's width in columns (0: unknown), for the
	// rows a long line wraps into.
	width   func() int
	drawn   string // the table on the terminal
	partial []byte
}

// Write prints whole lines above the table.
func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	i := bytes.LastIndexByte(s.partial, '\n')
	if i < 0 {
		return len(p), nil
	}
	s.erase()
	_, err := s.out.Write(s.partial[:i+1])
	s.partial = s.partial[i+1:]
	fmt.Fprint(s.out, s.drawn)
	return len(p), err
}

// show prints table, in place of the last one on a terminal.
func (s *screen) show(table string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tty {
		fmt.Fprint(s.out, "\n"+table)
		return
	}
	s.erase()
	s.drawn = table
	fmt.Fprint(s.out, s.drawn)
}

// erase moves the cursor up to the table's first line and clears from
// there down.
func (s *screen) erase() {
	if n := s.rows(); s.tty && n > 0 {
		fmt.Fprintf(s.out, "\x1b[%dA\x1b[J", n)
	}
}

// rows is the number of terminal rows the table takes.
func (s *screen) rows() int {
	w := 0
	if s.width != nil {
		w = s.width()
	}
	n := 0
	for _, l := range strings.SplitAfter(s.drawn, "\n") {
		if !strings.HasSuffix(l, "\n") {
			continue
		}
		if c := utf8.RuneCountInString(strings.TrimSuffix(l, "\n")); w > 0 && c > w {
			n += (c + w - 1) / w
		} else {
			n++
		}
	}
	return n
}
