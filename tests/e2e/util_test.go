package e2e

import (
	"sort"

	"google.golang.org/protobuf/types/known/anypb"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func intOrName(name string) intstr.IntOrString { return intstr.FromString(name) }

// anypbAny is the xDS resource envelope.
type anypbAny = anypb.Any

func sortStrings(s []string) { sort.Strings(s) }
