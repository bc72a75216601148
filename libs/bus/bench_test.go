package bus_test

import (
	"bytes"
	"github.com/openservicemesh/osm/libs/bus"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkPutWatch measures one put of a 1 KB protobuf through the KV plus
// its delivery to a watcher, on the embedded server with a file store.
// Keys rotate over 1,000 names, as a writer updating many objects would.
func BenchmarkPutWatch(b *testing.B) {
	_, st, w := watched(b, bus.BucketObserved)
	<-w.Events() // initialized

	msg := wrapperspb.Bytes(bytes.Repeat([]byte{'p'}, 1024))
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = bus.Key("pod", "bench", "p"+strconv.Itoa(i))
	}
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := st.Put(b.Context(), keys[i%len(keys)], msg); err != nil {
			b.Fatal(err)
		}
		if ev := <-w.Events(); ev.Kind != bus.EventPut {
			b.Fatalf("got %s", ev.Kind)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPutConcurrentWatch measures one-by-one puts (each waits for its
// acknowledgement) while a watcher drains the deliveries concurrently; see
// BenchmarkBatchPut for pipelined writes.
func BenchmarkPutConcurrentWatch(b *testing.B) {
	_, st, w := watched(b, bus.BucketObserved)
	<-w.Events()
	msg := wrapperspb.Bytes(bytes.Repeat([]byte{'p'}, 1024))
	done := make(chan struct{})
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for i := 0; i < b.N; i++ {
			<-w.Events()
		}
		close(done)
	}()
	for i := 0; i < b.N; i++ {
		if _, err := st.Put(b.Context(), bus.Key("pod", "bench", "p"+strconv.Itoa(i%1000)), msg); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkBatchPut measures pipelined writes of 1 KB protobufs through a
// bus.Batch, as the compiler writes a generation's changed keys.
func BenchmarkBatchPut(b *testing.B) {
	_, st, w := watched(b, bus.BucketCompiled)
	<-w.Events()
	w.Stop()
	data := bytes.Repeat([]byte{'p'}, 1024)
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	batch := st.Batch()
	for i := 0; i < b.N; i++ {
		data[0] = byte(i) // every value differs from the key's last one
		data[1] = byte(i >> 8)
		if _, err := batch.PutIfChanged(b.Context(), bus.Key("resource", "bench", "r"+strconv.Itoa(i%10000)), wrapperspb.Bytes(data)); err != nil {
			b.Fatal(err)
		}
		if batch.Len() == 1000 {
			if err := batch.Flush(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := batch.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
