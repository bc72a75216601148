package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestStoreFailsTheFirstAttempts: with --fail-attempts 2 the store answers
// UNAVAILABLE to a call's first and second attempts (no
// grpc-previous-rpc-attempts, then 1) and serves the third, whose number
// ends its answer; with 0 it serves every first attempt.
func TestStoreFailsTheFirstAttempts(t *testing.T) {
	at := func(prev string) context.Context {
		if prev == "" {
			return t.Context()
		}
		return metadata.NewIncomingContext(t.Context(), metadata.Pairs(previousAttempts, prev))
	}
	for _, tc := range []struct {
		fail int
		prev string
		code codes.Code
		want string
	}{
		{2, "", codes.Unavailable, "attempt 1 failed on purpose (--fail-attempts 2)"},
		{2, "1", codes.Unavailable, "attempt 2 failed on purpose (--fail-attempts 2)"},
		{2, "2", codes.OK, "v1 none none 3"},
		{2, "bad", codes.Unavailable, "attempt 1 failed"},
		{0, "", codes.OK, "v1 none none 1"},
	} {
		out, err := store{version: "v1", failAttempts: tc.fail}.reply(at(tc.prev), "Get", wrapperspb.String("book"))
		if status.Code(err) != tc.code {
			t.Errorf("fail %d, previous %q: %v, want %v", tc.fail, tc.prev, err, tc.code)
			continue
		}
		if got := status.Convert(err).Message() + out.GetValue(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("fail %d, previous %q: %q, want %q", tc.fail, tc.prev, got, tc.want)
		}
	}
}
