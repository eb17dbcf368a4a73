package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// killBatch is one batch of the kill -9 test's client, with its fate.
type killBatch struct {
	events []*pb.Event
	acked  bool
}

// killTruth is what the client knows was acknowledged: each event once.
type killTruth struct {
	mu     sync.Mutex
	input  map[string]int64 // by conversation
	output map[string]int64
	calls  map[string]int64
	events int64
	// counted records the ids already in the totals (an id acked twice,
	// once after a crash lost its first answer, counts once).
	counted map[string]bool
	acked   []*killBatch // resent later: every one must be a duplicate
	pending []*killBatch // sent, not answered: resent after the restart
	resent  int          // acknowledged batches resent
}

func (k *killTruth) ack(b *killBatch) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if b.acked {
		return
	}
	b.acked = true
	k.acked = append(k.acked, b)
	for _, ev := range b.events {
		if k.counted[ev.GetEventId()] {
			continue
		}
		k.counted[ev.GetEventId()] = true
		c := ev.GetLlmCall()
		conv := ev.GetConversationId()
		k.input[conv] += c.GetPromptTokens()
		k.output[conv] += c.GetCompletionTokens()
		k.calls[conv]++
		k.events++
	}
}

func (k *killTruth) totals() (input, output, events int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, v := range k.input {
		input += v
	}
	for _, v := range k.output {
		output += v
	}
	return input, output, k.events
}

const killConversations = 12

// killLoad sends batches from workers until stop is closed or the collector
// stops answering; an unanswered batch goes to pending, and one in ten sends
// is an acknowledged batch again, which must come back all duplicates.
func killLoad(t *testing.T, c *collector, k *killTruth, rng *rand.Rand, cycle int, stop <-chan struct{}) {
	const workers, batchSize = 4, 50
	var wg sync.WaitGroup
	seeds := make([]uint64, workers)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seeds[w], 1))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var b *killBatch
				resend := false
				k.mu.Lock()
				if len(k.acked) > 0 && r.IntN(10) == 0 {
					b, resend = k.acked[r.IntN(len(k.acked))], true
				}
				k.mu.Unlock()
				if b == nil {
					b = &killBatch{}
					for i := range batchSize {
						id := fmt.Sprintf("k%d-w%d-b%d-e%d", cycle, w, n, i)
						ev := simpleCall(id, "kill-model", 1+r.Int64N(5000), r.Int64N(2000))
						ev.ConversationId = fmt.Sprintf("kill-conv-%d", r.IntN(killConversations))
						b.events = append(b.events, ev)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := c.ingest.Record(ctx, &pb.RecordRequest{Events: b.events})
				cancel()
				if err != nil {
					if !resend {
						k.mu.Lock()
						k.pending = append(k.pending, b)
						k.mu.Unlock()
					}
					return // the collector is gone
				}
				if len(resp.GetRejected()) > 0 {
					t.Errorf("batch rejected events: %v", resp.GetRejected())
				}
				if resend {
					if resp.GetDuplicates() != uint32(len(b.events)) || resp.GetAccepted() != 0 {
						t.Errorf("an acknowledged batch resent: %d accepted, %d duplicates, want all %d duplicates",
							resp.GetAccepted(), resp.GetDuplicates(), len(b.events))
					}
					k.mu.Lock()
					k.resent++
					k.mu.Unlock()
					continue
				}
				if resp.GetAccepted() != uint32(len(b.events)) {
					t.Errorf("a new batch: %d accepted, %d duplicates, want %d accepted",
						resp.GetAccepted(), resp.GetDuplicates(), len(b.events))
				}
				k.ack(b)
			}
		})
	}
	wg.Wait()
}

// TestKill9Durability kills the collector with SIGKILL at random points under
// load, 24 times, restarting it on the same storage.directory. After each
// restart the client resends what was not answered; then GetUsage of every
// conversation, the /metrics totals and the OTLP export equal the
// acknowledged events, each counted once, and the OTLP series keep their
// start time.
func TestKill9Durability(t *testing.T) {
	t.Parallel()
	const kills = 24
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	dir := t.TempDir()
	s := &sink{}
	otlpAddr, _ := serveOTLPGRPC(t, "127.0.0.1:0", s)
	opts := options{
		Storage: &storageOptions{Directory: dir, SnapshotInterval: 500 * time.Millisecond},
		OTLP:    &otlpOptions{Endpoint: otlpAddr, Protocol: "grpc", Interval: 500 * time.Millisecond, Timeout: 500 * time.Millisecond},
	}
	k := &killTruth{input: map[string]int64{}, output: map[string]int64{}, calls: map[string]int64{}, counted: map[string]bool{}}
	var startTime uint64
	pendingResent := 0
	for cycle := range kills + 1 {
		c := startCollector(t, opts)
		// Resend what the last process did not answer, until answered.
		k.mu.Lock()
		pending := k.pending
		k.pending = nil
		k.mu.Unlock()
		for _, b := range pending {
			resp := c.record(b.events...)
			if got := resp.GetAccepted() + resp.GetDuplicates(); got != uint32(len(b.events)) {
				t.Fatalf("cycle %d: an unanswered batch resent: %d accepted + %d duplicates, want %d",
					cycle, resp.GetAccepted(), resp.GetDuplicates(), len(b.events))
			}
			k.ack(b)
			pendingResent++
		}
		// One fresh batch, so that an export with the totals comes from
		// this process.
		fresh := &killBatch{}
		for i := range 5 {
			ev := simpleCall(fmt.Sprintf("fresh-%d-%d", cycle, i), "kill-model", 7, 3)
			ev.ConversationId = fmt.Sprintf("kill-conv-%d", i)
			fresh.events = append(fresh.events, ev)
		}
		if resp := c.record(fresh.events...); resp.GetAccepted() != 5 {
			t.Fatalf("cycle %d: fresh batch: %v", cycle, resp)
		}
		k.ack(fresh)
		startTime = checkKillTotals(t, c, k, s, cycle, startTime)
		if t.Failed() {
			return
		}
		if cycle == kills {
			c.stop()
			break
		}
		// The kill's moment is drawn before the load starts: killLoad draws
		// its workers' seeds from rng too, and rng is not safe for
		// concurrent use.
		killAfter := time.Duration(50+rng.IntN(1200)) * time.Millisecond
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			killLoad(t, c, k, rng, cycle, stop)
		}()
		time.Sleep(killAfter)
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-c.exited
		close(stop)
		<-done
	}
	in, out, events := k.totals()
	t.Logf("%d kills; %d events acknowledged (%d input, %d output tokens); %d unanswered batches resent after a restart, %d acknowledged batches resent (all duplicates)",
		kills, events, in, out, pendingResent, k.resent)
}

// checkKillTotals compares GetUsage, /metrics and the last OTLP export with
// the truth; it returns the OTLP start time, which must never change.
func checkKillTotals(t *testing.T, c *collector, k *killTruth, s *sink, cycle int, startTime uint64) uint64 {
	t.Helper()
	in, out, events := k.totals()
	usage := pb.NewUsageServiceClient(c.conn)
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range killConversations {
		conv := fmt.Sprintf("kill-conv-%d", i)
		if k.calls[conv] == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := usage.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: conv})
		cancel()
		if err != nil {
			t.Errorf("cycle %d: GetUsage(%s): %v", cycle, conv, err)
			continue
		}
		u := resp.GetUsage()
		if u.GetTokens().GetInput() != k.input[conv] || u.GetTokens().GetOutput() != k.output[conv] || u.GetCalls() != k.calls[conv] {
			t.Errorf("cycle %d: %s: input %d output %d calls %d, want %d %d %d", cycle, conv,
				u.GetTokens().GetInput(), u.GetTokens().GetOutput(), u.GetCalls(), k.input[conv], k.output[conv], k.calls[conv])
		}
	}
	fams, _ := c.scrape()
	model := labels{"gen_ai_request_model": "kill-model"}
	if v, _ := fams.value("agentmeter_llm_tokens_total", with(model, "gen_ai_token_type", "input")); int64(v) != in {
		t.Errorf("cycle %d: /metrics input tokens %v, want %d", cycle, v, in)
	}
	if v, _ := fams.value("agentmeter_llm_tokens_total", with(model, "gen_ai_token_type", "output")); int64(v) != out {
		t.Errorf("cycle %d: /metrics output tokens %v, want %d", cycle, v, out)
	}
	if n, _, _, _ := fams.hist("gen_ai_client_operation_duration_seconds", model, 1); int64(n) != events {
		t.Errorf("cycle %d: /metrics duration histogram count %d, want %d", cycle, n, events)
	}
	// Accepted events are counted once each, whatever was killed when.
	if v, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "accepted"}); int64(v) != events {
		t.Errorf("cycle %d: /metrics agentmeter_receiver_events_total{llm_call,accepted} = %v, want %d", cycle, v, events)
	}
	var last *collectorpb.ExportMetricsServiceRequest
	eventually(t, 20*time.Second, "an OTLP export with the acknowledged totals", func() (bool, string) {
		ex := s.all()
		if len(ex) == 0 {
			return false, "no export"
		}
		last = ex[len(ex)-1].req
		gotIn, gotOut := tokensIn(last, "input"), tokensIn(last, "output")
		return int64(gotIn) == in && int64(gotOut) == out, fmt.Sprintf("input %v output %v, want %d %d", gotIn, gotOut, in, out)
	})
	for key, st := range startTimes(last) {
		if startTime == 0 {
			startTime = st
		}
		if st != startTime {
			t.Errorf("cycle %d: OTLP start time of %s is %d, was %d: the cumulative series restarted", cycle, key, st, startTime)
		}
	}
	return startTime
}
