package processor

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Produce implements go.opentelemetry.io/otel/sdk/metric.Producer: every
// reader (the Prometheus exporter, the OTLP periodic reader) calls it at
// collection time and gets the catalogue's series as cumulative data points,
// copied under the lock.
func (p *Processor) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	start := p.start

	// Every slice is sized for the most points it can get: at the series
	// cap, growing them by appending doubled what a collection allocates.
	n, nDur := len(p.llm)+1, 0
	for _, s := range p.llm {
		nDur += len(s.duration)
	}
	if p.overflow != nil {
		nDur += len(p.overflow.duration)
	}
	var (
		tokenUsage = metricdata.Histogram[int64]{Temporality: metricdata.CumulativeTemporality,
			DataPoints: make([]metricdata.HistogramDataPoint[int64], 0, 2*n)}
		duration = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality,
			DataPoints: make([]metricdata.HistogramDataPoint[float64], 0, nDur)}
		ttft = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality,
			DataPoints: make([]metricdata.HistogramDataPoint[float64], 0, n)}
		ctxUtil = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality,
			DataPoints: make([]metricdata.HistogramDataPoint[float64], 0, n)}
		tokens = metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			DataPoints: make([]metricdata.DataPoint[int64], 0, numTokenTypes*n)}
		cost = metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			DataPoints: make([]metricdata.DataPoint[float64], 0, numCostSources*n)}
		savings = metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			DataPoints: make([]metricdata.DataPoint[float64], 0, n)}
		unpriced = map[string]int64{}
	)
	add := func(s *llmSeries) {
		for i, t := range [2]int{tokInput, tokOutput} {
			if h := s.tokenUsage[i]; h.count > 0 {
				tokenUsage.DataPoints = append(tokenUsage.DataPoints, h.intPoint(s.tokenSets[t], start, now))
			}
		}
		for errType, h := range s.duration {
			if h.count > 0 {
				duration.DataPoints = append(duration.DataPoints, h.point(s.errSets[errType], start, now))
			}
		}
		if s.ttft.count > 0 {
			ttft.DataPoints = append(ttft.DataPoints, s.ttft.point(s.attrs, start, now))
		}
		if s.ctxUtil.count > 0 {
			ctxUtil.DataPoints = append(ctxUtil.DataPoints, s.ctxUtil.point(s.attrs, start, now))
		}
		for t := range numTokenTypes {
			tokens.DataPoints = append(tokens.DataPoints, metricdata.DataPoint[int64]{
				Attributes: s.tokenSets[t], StartTime: start, Time: now, Value: s.tokens[t],
			})
		}
		for c := range numCostSources {
			if s.costSeen[c] {
				cost.DataPoints = append(cost.DataPoints, metricdata.DataPoint[float64]{
					Attributes: s.costSets[c], StartTime: start, Time: now, Value: s.cost[c],
				})
			}
		}
		if s.priced {
			savings.DataPoints = append(savings.DataPoints, metricdata.DataPoint[float64]{
				Attributes: s.attrs, StartTime: start, Time: now, Value: s.cacheSavings,
			})
		}
		if s.unpriced > 0 {
			unpriced[s.requestModel] += s.unpriced
		}
	}
	for _, s := range p.llm {
		add(s)
	}
	if p.overflow != nil {
		add(p.overflow)
	}

	transitions := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	for k, n := range p.status.transitions {
		transitions.DataPoints = append(transitions.DataPoints, metricdata.DataPoint[int64]{
			Attributes: p.status.sets[k], StartTime: start, Time: now, Value: n,
		})
	}
	conversations := metricdata.Gauge[int64]{}
	for k, n := range p.status.conversations {
		conversations.DataPoints = append(conversations.DataPoints, metricdata.DataPoint[int64]{
			Attributes: p.status.sets[k], Time: now, Value: n,
		})
	}
	overflow := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
		DataPoints: []metricdata.DataPoint[int64]{{StartTime: start, Time: now, Value: p.overflowCalls}}}
	saturations := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
		DataPoints: []metricdata.DataPoint[int64]{{StartTime: start, Time: now, Value: p.saturations}}}
	events, unloggedStart := p.produceEvents(now)
	// Evictions follow sweeps and reloads that are not in the log: they
	// have the start time of the unlogged counts (see tally.go).
	evicted := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	for r := range numEvictReasons {
		evicted.DataPoints = append(evicted.DataPoints, metricdata.DataPoint[int64]{
			Attributes: attribute.NewSet(catalog.AttrCloseReason.String(evictReasonNames[r])),
			StartTime:  unloggedStart, Time: now, Value: p.convs.evicted[r],
		})
	}

	unpricedSum := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	for model, n := range unpriced {
		unpricedSum.DataPoints = append(unpricedSum.DataPoints, metricdata.DataPoint[int64]{
			Attributes: attribute.NewSet(catalog.AttrRequestModel.String(model)), StartTime: start, Time: now, Value: n,
		})
	}
	life := p.produceLifecycle(start, now)

	m := func(i catalog.Instrument, data metricdata.Aggregation) metricdata.Metrics {
		return metricdata.Metrics{Name: i.Name, Description: i.Description, Unit: i.Unit, Data: data}
	}
	metrics := []metricdata.Metrics{
		m(catalog.TokenUsage, tokenUsage),
		m(catalog.OperationDuration, duration),
		m(catalog.TimeToFirstChunk, ttft),
		m(catalog.LLMTokens, tokens),
		m(catalog.LLMCost, cost),
		m(catalog.ContextUtilization, ctxUtil),
		m(catalog.StatusTransitions, transitions),
		m(catalog.AgentConversations, conversations),
		m(catalog.ReceiverEvents, events),
		m(catalog.SeriesOverflow, overflow),
		m(catalog.ConversationsEvicted, evicted),
		m(catalog.UnpricedCalls, unpricedSum),
		m(catalog.CacheSavings, savings),
		m(catalog.ConversationsCreated, life.created),
		m(catalog.SessionStartDuration, life.sessionStart),
		m(catalog.ConversationsActive, metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{
			{Time: now, Value: int64(len(p.convs.byID)) - p.life.closedTracked}}}),
		m(catalog.ConversationsLimit, life.limit),
		m(catalog.ConversationsClosed, life.closed),
		m(catalog.ConversationCost, life.convCost),
		m(catalog.ConversationTokens, life.convTokens),
		m(catalog.RuntimeFaults, life.faults),
		m(catalog.BudgetCrossings, life.crossings),
		m(catalog.TokenSaturations, saturations),
	}
	// A metric with no data point yet is left out, as the SDK does for its
	// own instruments: OTLP receivers warn about empty metrics.
	metrics = slices.DeleteFunc(metrics, func(m metricdata.Metrics) bool { return points(m.Data) == 0 })
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: catalog.ScopeName}, Metrics: metrics}}, nil
}

// points is the number of data points of an aggregation.
func points(a metricdata.Aggregation) int {
	switch d := a.(type) {
	case metricdata.Sum[int64]:
		return len(d.DataPoints)
	case metricdata.Sum[float64]:
		return len(d.DataPoints)
	case metricdata.Gauge[int64]:
		return len(d.DataPoints)
	case metricdata.Histogram[int64]:
		return len(d.DataPoints)
	case metricdata.Histogram[float64]:
		return len(d.DataPoints)
	}
	return 1
}

type lifecycleData struct {
	created, closed, faults, crossings metricdata.Sum[int64]
	sessionStart, convCost             metricdata.Histogram[float64]
	convTokens                         metricdata.Histogram[int64]
	limit                              metricdata.Gauge[int64]
}

// produceLifecycle copies the lifecycle totals. p.mu is held.
func (p *Processor) produceLifecycle(start, now time.Time) lifecycleData {
	counter := func(values []int64, key attribute.Key, label func(i int) string) metricdata.Sum[int64] {
		sum := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		for i, v := range values {
			if v == 0 {
				continue
			}
			sum.DataPoints = append(sum.DataPoints, metricdata.DataPoint[int64]{
				Attributes: attribute.NewSet(key.String(label(i))), StartTime: start, Time: now, Value: v,
			})
		}
		return sum
	}
	d := lifecycleData{
		created: counter(p.life.created, catalog.AttrTrigger, func(i int) string {
			return enumLabel(pb.ConversationTrigger_name[int32(i)], "CONVERSATION_TRIGGER_")
		}),
		closed: counter(p.life.closed, catalog.AttrCloseReason, func(i int) string {
			return enumLabel(pb.CloseReason_name[int32(i)], "CLOSE_REASON_")
		}),
		faults: counter(p.life.faults, catalog.AttrFaultKind, func(i int) string {
			return enumLabel(pb.RuntimeFaultKind_name[int32(i)], "RUNTIME_FAULT_KIND_")
		}),
		crossings:    counter(p.life.crossings[:], catalog.AttrThreshold, func(i int) string { return budgetThresholdNames[i] }),
		sessionStart: metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality},
		convCost:     metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality},
		convTokens:   metricdata.Histogram[int64]{Temporality: metricdata.CumulativeTemporality},
	}
	for i, h := range p.life.sessionStart {
		if h.count > 0 {
			d.sessionStart.DataPoints = append(d.sessionStart.DataPoints,
				h.point(attribute.NewSet(catalog.AttrSuccess.Bool(i == 1)), start, now))
		}
	}
	if h := p.life.convCost; h.count > 0 {
		d.convCost.DataPoints = append(d.convCost.DataPoints, h.point(attribute.NewSet(), start, now))
	}
	if h := p.life.convTokens; h.count > 0 {
		d.convTokens.DataPoints = append(d.convTokens.DataPoints, h.intPoint(attribute.NewSet(), start, now))
	}
	if p.life.hasLimit {
		d.limit.DataPoints = []metricdata.DataPoint[int64]{{Time: now, Value: p.life.limit}}
	}
	return d
}
