package e2e

import (
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func intOrName(name string) intstr.IntOrString { return intstr.FromString(name) }

// anypbAny is the xDS resource envelope.
type anypbAny = anypb.Any

func sortStrings(s []string) { sort.Strings(s) }

var runs atomic.Int64

// uniq is a suffix that differs between test runs on one cluster.
func uniq() string { return fmt.Sprintf("-%d-%d", time.Now().Unix()%100000, runs.Add(1)) }
