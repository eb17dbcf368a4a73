package processor

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/agentmeter/agentmeter/catalog"
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

	var (
		tokenUsage = metricdata.Histogram[int64]{Temporality: metricdata.CumulativeTemporality}
		duration   = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
		ttft       = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
		ctxUtil    = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality}
		tokens     = metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
		cost       = metricdata.Sum[float64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
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
	evicted := metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true}
	for r := range numEvictReasons {
		evicted.DataPoints = append(evicted.DataPoints, metricdata.DataPoint[int64]{
			Attributes: attribute.NewSet(catalog.AttrCloseReason.String(evictReasonNames[r])),
			StartTime:  start, Time: now, Value: p.convs.evicted[r],
		})
	}

	m := func(i catalog.Instrument, data metricdata.Aggregation) metricdata.Metrics {
		return metricdata.Metrics{Name: i.Name, Description: i.Description, Unit: i.Unit, Data: data}
	}
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: catalog.ScopeName},
		Metrics: []metricdata.Metrics{
			m(catalog.TokenUsage, tokenUsage),
			m(catalog.OperationDuration, duration),
			m(catalog.TimeToFirstChunk, ttft),
			m(catalog.LLMTokens, tokens),
			m(catalog.LLMCost, cost),
			m(catalog.ContextUtilization, ctxUtil),
			m(catalog.StatusTransitions, transitions),
			m(catalog.AgentConversations, conversations),
			m(catalog.SeriesOverflow, overflow),
			m(catalog.ConversationsEvicted, evicted),
		},
	}}, nil
}
