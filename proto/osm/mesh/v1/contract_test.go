package meshv1_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	cav1 "github.com/openservicemesh/osm/proto/osm/ca/v1"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// contractFiles are the .proto files of the contract; each must be linked
// into the binary through its generated Go package.
var contractFiles = []protoreflect.FileDescriptor{
	meshv1.File_osm_mesh_v1_common_proto,
	meshv1.File_osm_mesh_v1_kube_proto,
	meshv1.File_osm_mesh_v1_smi_proto,
	meshv1.File_osm_mesh_v1_retry_proto,
	meshv1.File_osm_mesh_v1_egress_proto,
	meshv1.File_osm_mesh_v1_upstream_proto,
	meshv1.File_osm_mesh_v1_ingress_proto,
	meshv1.File_osm_mesh_v1_config_proto,
	meshv1.File_osm_mesh_v1_sync_proto,
	meshv1.File_osm_mesh_v1_lease_proto,
	meshv1.File_osm_mesh_v1_compiled_proto,
	meshv1.File_osm_mesh_v1_trust_proto,
	meshv1.File_osm_mesh_v1_status_proto,
	cav1.File_osm_ca_v1_ca_proto,
}

// TestEveryOSMFileIsListed fails when a new .proto file under osm/ is
// generated but not added to contractFiles (and so not covered below).
func TestEveryOSMFileIsListed(t *testing.T) {
	listed := map[string]bool{}
	for _, fd := range contractFiles {
		listed[fd.Path()] = true
	}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(fd.Package()), "osm.") && !listed[fd.Path()] {
			t.Errorf("%s is registered but missing from contractFiles", fd.Path())
		}
		return true
	})
}

// TestMessagesRoundTrip fills every field of every message, then checks that
// the message is registered under its full name, that deterministic
// marshalling is stable (maps included), and that it decodes back unchanged.
// Components compare and hash these bytes (e.g. to skip unchanged KV writes),
// so stability is part of the contract.
func TestMessagesRoundTrip(t *testing.T) {
	for _, fd := range contractFiles {
		for _, md := range allMessages(fd.Messages()) {
			t.Run(string(md.FullName()), func(t *testing.T) {
				mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
				if err != nil {
					t.Fatalf("message not registered: %v", err)
				}
				msg := mt.New()
				fill(msg, 0)
				opts := proto.MarshalOptions{Deterministic: true}
				first, err := opts.Marshal(msg.Interface())
				if err != nil {
					t.Fatalf("marshal: %v", err)
				}
				if len(first) == 0 && md.Fields().Len() > 0 {
					t.Fatal("filled message marshalled to zero bytes")
				}
				got := mt.New().Interface()
				if err := proto.Unmarshal(first, got); err != nil {
					t.Fatalf("unmarshal: %v", err)
				}
				if !proto.Equal(msg.Interface(), got) {
					t.Fatalf("round trip changed the message:\nsent %v\ngot  %v", msg, got)
				}
				for range 5 {
					again, err := opts.Marshal(got)
					if err != nil {
						t.Fatalf("marshal again: %v", err)
					}
					if !bytes.Equal(first, again) {
						t.Fatal("deterministic marshal is not stable")
					}
				}
			})
		}
	}
}

// allMessages lists messages and their nested messages, skipping map entries.
func allMessages(mds protoreflect.MessageDescriptors) []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	for i := range mds.Len() {
		md := mds.Get(i)
		if md.IsMapEntry() {
			continue
		}
		out = append(out, md)
		out = append(out, allMessages(md.Messages())...)
	}
	return out
}

// fill sets every field of m to a non-zero value: one member per oneof, two
// entries per list and map, recursing into messages up to a small depth.
func fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() && m.WhichOneof(o) != nil {
			continue
		}
		switch {
		case f.IsMap():
			mp := m.Mutable(f).Map()
			for k := range 2 {
				key := scalar(f.MapKey(), k).MapKey()
				if f.MapValue().Kind() == protoreflect.MessageKind {
					v := mp.NewValue()
					fill(v.Message(), depth+1)
					mp.Set(key, v)
				} else {
					mp.Set(key, scalar(f.MapValue(), k))
				}
			}
		case f.IsList():
			l := m.Mutable(f).List()
			for k := range 2 {
				if f.Kind() == protoreflect.MessageKind {
					v := l.NewElement()
					fill(v.Message(), depth+1)
					l.Append(v)
				} else {
					l.Append(scalar(f, k))
				}
			}
		case f.Kind() == protoreflect.MessageKind:
			if depth < 4 {
				fill(m.Mutable(f).Message(), depth+1)
			}
		default:
			m.Set(f, scalar(f, 1))
		}
	}
}

// scalar returns a non-zero value of f's kind that differs with n.
func scalar(f protoreflect.FieldDescriptor, n int) protoreflect.Value {
	switch f.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := f.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(-7 - n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(-7 - n))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(7 + n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(7 + n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n) + 0.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n) + 0.25)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d", f.Name(), n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(fmt.Sprintf("%s-%d", f.Name(), n)))
	default:
		panic(fmt.Sprintf("unhandled kind %v of %s", f.Kind(), f.FullName()))
	}
}
