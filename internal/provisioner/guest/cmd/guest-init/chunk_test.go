package main

import (
	"strings"
	"testing"
)

// A runner's line longer than a chunk reaches the log in pieces, none lost, and the lines after
// it still come.
func TestLongRunnerLinesAreSplitNotLost(t *testing.T) {
	long := strings.Repeat("0123456789", 5000) // 50,000 bytes
	var got []string
	eachChunk(strings.NewReader("short\n"+long+"\nafter\nno newline"), runnerChunk, func(s string) { got = append(got, s) })
	if len(got) != 7 || got[0] != "short" || got[5] != "after" || got[6] != "no newline" {
		t.Fatalf("%d pieces: %q …", len(got), firsts(got))
	}
	if joined := strings.Join(got[1:5], ""); joined != long {
		t.Errorf("the long line came back as %d bytes, want %d", len(joined), len(long))
	}
	for _, p := range got {
		if len(p) > runnerChunk {
			t.Errorf("a piece of %d bytes, more than %d", len(p), runnerChunk)
		}
	}
}

func firsts(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s[:min(len(s), 12)]
	}
	return out
}
