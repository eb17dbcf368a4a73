package processor

import (
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// The processor counts what became of every event handed to it, or refused
// before it by validation (Refused): agentmeter.receiver.events. The counts
// live here, beside the other totals, so that the snapshot persists them
// and the series carry the processor's start times.
//
// Two kinds of counts, two start times:
//   - accepted events are counted when applied, under Processor.mu, so the
//     log replay after a crash counts them again, exactly: they continue
//     across any restart under the stored start time (acceptedStart);
//   - duplicates, rejections and conversation evictions are not in the log
//     (nothing is written for a duplicate, an eviction follows sweeps and
//     reloads that are not logged). The snapshots carry them, but only the
//     final snapshot of a clean shutdown has them all: a restart after it
//     continues them under their start time; after a crash they start again
//     at zero with a new start time (the process start), a counter reset,
//     never a decrease under the same start time.

// Payload types of agentmeter.receiver.events.
const (
	typeLLMCall = iota
	typeAgentStatus
	typeConversation
	typeRuntimeFault
	typeNone
	numPayloadTypes
)

var payloadTypeNames = [numPayloadTypes]string{"llm_call", "agent_status", "conversation", "runtime_fault", "none"}

func payloadType(ev *pb.Event) int {
	switch ev.GetPayload().(type) {
	case *pb.Event_LlmCall:
		return typeLLMCall
	case *pb.Event_AgentStatus:
		return typeAgentStatus
	case *pb.Event_Conversation:
		return typeConversation
	case *pb.Event_RuntimeFault:
		return typeRuntimeFault
	}
	return typeNone
}

// unlogged are the counts the log cannot rebuild. mu guards them; frozen is
// written holding both Processor.mu and mu, and read holding either. Lock
// order: Processor.mu, then mu.
type unlogged struct {
	mu sync.Mutex
	// frozen is set by Shutdown before the final snapshot: nothing counted
	// after it would be in that snapshot, so nothing is.
	frozen bool
	// start is the start time of these series.
	start               time.Time
	duplicate, rejected [numPayloadTypes]int64
	// resumed: restored from a final snapshot.
	resumed bool
}

// Refused counts an event refused before Consume (it failed validation).
func (p *Processor) Refused(ev *pb.Event) {
	t := payloadType(ev)
	p.unlogged.mu.Lock()
	if !p.unlogged.frozen {
		p.unlogged.rejected[t]++
	}
	p.unlogged.mu.Unlock()
}

// countUnlogged counts the duplicates and rejections of a consumed batch.
func (p *Processor) countUnlogged(events []*pb.Event, results []Result) {
	var dup, rej [numPayloadTypes]int64
	n := 0
	for i, r := range results[:len(events)] {
		switch r.Outcome {
		case Duplicate:
			dup[payloadType(events[i])]++
			n++
		case Rejected:
			rej[payloadType(events[i])]++
			n++
		}
	}
	if n == 0 {
		return
	}
	u := &p.unlogged
	u.mu.Lock()
	if !u.frozen {
		for t := range numPayloadTypes {
			u.duplicate[t] += dup[t]
			u.rejected[t] += rej[t]
		}
	}
	u.mu.Unlock()
}

// freeze stops the unlogged counts, before the final snapshot.
func (p *Processor) freeze() {
	p.mu.Lock()
	p.unlogged.mu.Lock()
	p.unlogged.frozen = true
	p.unlogged.mu.Unlock()
	p.mu.Unlock()
}

// resetUnlogged starts the unlogged counts again at zero at start. p.mu is
// held (or p is being built).
func (p *Processor) resetUnlogged(start time.Time) {
	u := &p.unlogged
	u.mu.Lock()
	u.start, u.resumed = start, false
	clear(u.duplicate[:])
	clear(u.rejected[:])
	u.mu.Unlock()
	clear(p.convs.evicted[:])
}

// eventSets are the attribute sets of agentmeter.receiver.events, by
// payload type and outcome.
type eventSets [numPayloadTypes][3]attribute.Set

func newEventSets() *eventSets {
	var s eventSets
	for t := range numPayloadTypes {
		for o, name := range [3]string{catalog.OutcomeAccepted, catalog.OutcomeDuplicate, catalog.OutcomeRejected} {
			s[t][o] = attribute.NewSet(catalog.AttrEventType.String(payloadTypeNames[t]),
				catalog.AttrOutcome.String(name))
		}
	}
	return &s
}

// produceEvents is agentmeter.receiver.events, and the start time of the
// unlogged counts. p.mu is held.
func (p *Processor) produceEvents(now time.Time) (metricdata.Sum[int64], time.Time) {
	sum := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
		DataPoints: make([]metricdata.DataPoint[int64], 0, 3*numPayloadTypes-2)}
	u := &p.unlogged
	u.mu.Lock()
	defer u.mu.Unlock()
	for t := range numPayloadTypes {
		// An event with no payload is never applied: only rejections.
		if t != typeNone {
			sum.DataPoints = append(sum.DataPoints,
				metricdata.DataPoint[int64]{Attributes: p.eventSets[t][Accepted], StartTime: p.acceptedStart, Time: now, Value: p.accepted[t]},
				metricdata.DataPoint[int64]{Attributes: p.eventSets[t][Duplicate], StartTime: u.start, Time: now, Value: u.duplicate[t]})
		}
		sum.DataPoints = append(sum.DataPoints,
			metricdata.DataPoint[int64]{Attributes: p.eventSets[t][Rejected], StartTime: u.start, Time: now, Value: u.rejected[t]})
	}
	return sum, u.start
}
