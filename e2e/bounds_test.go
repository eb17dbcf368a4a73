package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func llmEvent(id string) *pb.Event { return simpleCall(id, "gpt-4o", 10, 5) }

// emptyEvents encodes a RecordRequest of n empty events, 2 bytes each.
func emptyEvents(n int) []byte {
	b := make([]byte, 0, 2*n)
	for range n {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, nil)
	}
	return b
}

const ingestService = "agentmeter.v1.IngestService"

// TestOverCountRefusedBeforeDecode: requests of empty events far over
// max_events_per_request are refused with InvalidArgument from a scan of
// the wire bytes, before they are decoded: 16 concurrent 4 MB requests (2
// million events each, ~280 MB each once decoded) leave the peak RSS
// where the wire bytes alone put it, and the collector then accepts a
// batch at once.
func TestOverCountRefusedBeforeDecode(t *testing.T) {
	c := startCollector(t, options{MaxEventsPerRequest: 10000})
	pid := c.cmd.Process.Pid
	c.record(llmEvent("warm-up"))
	before, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	send := func(req []byte) error {
		return c.conn.Invoke(context.Background(), "/agentmeter.v1.IngestService/Record", req, new(pb.RecordResponse), grpc.ForceCodecV2(rawCodec{}))
	}
	// Ten times the bound: named in the refusal.
	if err := send(emptyEvents(100_000)); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "100000 events") {
		t.Fatalf("100000 events = %v, want InvalidArgument counting them", err)
	}
	big := emptyEvents(2_000_000) // 4,000,000 bytes, under the 4 MiB message bound
	const rounds, concurrent = 3, 16
	var wg sync.WaitGroup
	for range rounds {
		for range concurrent {
			wg.Go(func() {
				if err := send(big); status.Code(err) != codes.InvalidArgument {
					t.Errorf("2000000 events = %v, want InvalidArgument", err)
				}
			})
		}
		wg.Wait()
	}
	after, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak RSS %d MiB before, %d MiB after %d x %d requests of 2000000 empty events", before>>10, after>>10, rounds, concurrent)
	// The wire bytes of 16 requests are 61 MiB (a copy of them would make it
	// 120), decoding them would take GBs.
	if grown := (after - before) >> 10; grown > 96 {
		t.Errorf("peak RSS grew by %d MiB: the requests were decoded before their count was checked", grown)
	}
	start := time.Now()
	if resp := c.record(llmEvent("after")); resp.Accepted != 1 {
		t.Fatalf("a batch after the storm: %v", resp)
	}
	t.Logf("a 1-event batch after the storm answered in %v", time.Since(start))
	fams, _ := c.scrape()
	if n, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": ingestService, "grpc_code": "InvalidArgument"}); n != rounds*concurrent+1 {
		t.Errorf("refused InvalidArgument = %v, want %d", n, rounds*concurrent+1)
	}
}

// TestReceiveTimeoutCutsHungCalls: with receive_timeout 1s, a RecordStream
// that goes silent is ended with UNAVAILABLE (reopen and resend what was not
// answered), a unary call that sends all but the last bytes of its request
// is cancelled, both give their slots back, and both are counted.
func TestReceiveTimeoutCutsHungCalls(t *testing.T) {
	c := startCollector(t, options{GRPCExtra: "receive_timeout: 1s\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.ingest.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.RecordRequest{Events: []*pb.Event{llmEvent("s1")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	silent := time.Now()
	partial := sendPartialRequest(t, c.grpcAddr)
	defer partial.Close()
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "receive_timeout") {
		t.Fatalf("silent stream ended with %v, want Unavailable naming receive_timeout", err)
	}
	if d := time.Since(silent); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("silent stream cut after %v, want about receive_timeout (1s)", d)
	}
	eventually(t, 10*time.Second, "both calls cut and their slots back", func() (bool, string) {
		fams, _ := c.scrape()
		cut, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": ingestService, "grpc_code": "Canceled"})
		idle, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": ingestService, "grpc_code": "Unavailable"})
		inflight, _ := fams.value("agentmeter_grpc_inflight_rpcs", nil)
		return cut == 1 && idle == 1 && inflight == 0, fmt.Sprintf("canceled %v, unavailable %v, in flight %v", cut, idle, inflight)
	})
	if resp := c.record(llmEvent("after")); resp.Accepted != 1 {
		t.Fatalf("a batch after the cuts: %v", resp)
	}
}

// sendPartialRequest opens a raw HTTP/2 connection and sends the headers of
// a Record call and 10 bytes of its 1000-byte message, then nothing.
func sendPartialRequest(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", "/agentmeter.v1.IngestService/Record"},
		{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(1, false, append([]byte{0, 0, 0, 0x03, 0xe8}, make([]byte, 10)...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestInflightBudgetRefusesWithRetryInfo: with max_inflight_rpcs calls open,
// the next is refused with RESOURCE_EXHAUSTED and a RetryInfo, and counted;
// once one ends, calls go through again.
func TestInflightBudgetRefusesWithRetryInfo(t *testing.T) {
	c := startCollector(t, options{GRPCExtra: "max_inflight_rpcs: 2\n"})
	var cancels []context.CancelFunc
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		stream, err := c.ingest.RecordStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pb.RecordRequest{Events: []*pb.Event{llmEvent(string(rune('a' + i)))}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.ingest.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{llmEvent("refused")}})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "max_inflight_rpcs") {
		t.Fatalf("third call = %v, want RESOURCE_EXHAUSTED naming max_inflight_rpcs", err)
	}
	var delay time.Duration
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			delay = r.GetRetryDelay().AsDuration()
		}
	}
	if delay <= 0 {
		t.Errorf("no RetryInfo delay in %v", st.Details())
	}
	fams, _ := c.scrape()
	if n, _ := fams.value("agentmeter_grpc_requests_refused_total", labels{"grpc_service": ingestService, "grpc_code": "ResourceExhausted"}); n != 1 {
		t.Errorf("refused ResourceExhausted = %v, want 1", n)
	}
	cancels[0]()
	eventually(t, 10*time.Second, "a call goes through once a stream ended", func() (bool, string) {
		_, err := c.ingest.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{llmEvent("later")}})
		return err == nil, status.Convert(err).Message()
	})
	cancels[1]()
}
