package processor

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// ErrBadPageToken is returned by ListUsage for a page token it did not issue.
var ErrBadPageToken = errors.New("page_token is not one this sidecar issued")

// Usage returns the ledger entry of a conversation: tracked, or (durable
// mode) stored, which tracks it again. It is O(1): a map lookup (or one
// storage read) and a copy.
func (p *Processor) Usage(id string) (*pb.ConversationUsage, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.lookup(id, 0)
	if c == nil {
		return nil, false
	}
	return c.usage(), true
}

// usage copies the entry. p.mu is held.
func (c *conversation) usage() *pb.ConversationUsage {
	u := &pb.ConversationUsage{
		ConversationId:     c.id,
		Agent:              c.agent,
		CostUsd:            c.totalCost(),
		ReportedCostUsd:    c.cost[costReported],
		ComputedCostUsd:    c.cost[costComputed],
		UnpricedCalls:      c.unpriced,
		ContextWindow:      c.contextWindow,
		ContextUtilization: c.contextUtil,
		Calls:              c.calls,
		FailedCalls:        c.failed,
		State:              c.state,
		Closed:             c.closed,
		CloseReason:        c.closeReason,
		Trigger:            c.trigger,
		RuntimeFaults:      c.faults,
		Tokens: &pb.TokenUsage{
			Input:         c.tokens[ledgerInput],
			Output:        c.tokens[ledgerOutput],
			CacheRead:     c.tokens[ledgerCacheRead],
			CacheWrite:    c.tokens[ledgerCacheWrite],
			CacheWrite_1H: c.tokens[ledgerCacheWrite1h],
			Reasoning:     c.tokens[ledgerReasoning],
		},
	}
	if c.firstEvent != 0 {
		u.FirstEventTime = timestamppb.New(time.Unix(0, c.firstEvent))
		u.LastEventTime = timestamppb.New(time.Unix(0, c.lastEvent))
	}
	for _, pt := range c.perTurn {
		u.PerTurnTokens = append(u.PerTurnTokens, &pb.PerTurnTokens{LlmService: pt.service, Tokens: pt.tokens})
	}
	if c.hasBudget {
		budget, remaining := c.budget, c.budget-u.CostUsd
		u.MaxBudgetUsd, u.RemainingUsd = &budget, &remaining
		u.BudgetExceeded = u.CostUsd >= c.budget
	}
	return u
}

// ListUsage returns up to pageSize tracked conversations in state (all when
// unspecified), newest first, after pageToken; and the token of the next
// page, empty on the last.
func (p *Processor) ListUsage(state pb.AgentState, pageToken string, pageSize int) ([]*pb.ConversationUsage, string, error) {
	var after cursor
	if pageToken != "" {
		var err error
		if after, err = parseCursor(pageToken); err != nil {
			return nil, "", err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	matched := make([]*conversation, 0, min(len(p.convs.byID), 1024))
	for _, c := range p.convs.byID {
		if state != pb.AgentState_AGENT_STATE_UNSPECIFIED && c.state != state {
			continue
		}
		if pageToken != "" && !after.before(c) {
			continue
		}
		matched = append(matched, c)
	}
	slices.SortFunc(matched, func(a, b *conversation) int {
		if a.trackedAt != b.trackedAt {
			return cmp.Compare(b.trackedAt, a.trackedAt) // newest first
		}
		return strings.Compare(a.id, b.id)
	})
	next := ""
	if len(matched) > pageSize {
		matched = matched[:pageSize]
		last := matched[pageSize-1]
		next = cursor{trackedAt: last.trackedAt, id: last.id}.String()
	}
	out := make([]*pb.ConversationUsage, len(matched))
	for i, c := range matched {
		out[i] = c.usage()
	}
	return out, next, nil
}

// cursor is a position in ListUsage's order.
type cursor struct {
	trackedAt int64
	id        string
}

// before reports whether c comes after the cursor in ListUsage's order.
func (k cursor) before(c *conversation) bool {
	if c.trackedAt != k.trackedAt {
		return c.trackedAt < k.trackedAt
	}
	return c.id > k.id
}

func (k cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.trackedAt, 10) + "/" + k.id))
}

func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: %w", ErrBadPageToken, err)
	}
	at, id, ok := strings.Cut(string(b), "/")
	if !ok {
		return cursor{}, ErrBadPageToken
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return cursor{}, fmt.Errorf("%w: %w", ErrBadPageToken, err)
	}
	return cursor{trackedAt: n, id: id}, nil
}

// Watch returns a channel that receives a signal (coalesced) whenever
// conversation id changes, and is closed when the sidecar stops tracking
// it; and a function that stops watching. ok is false for a conversation
// not tracked.
func (p *Processor) Watch(id string) (changes <-chan struct{}, stop func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.lookup(id, 0)
	if c == nil {
		return nil, nil, false
	}
	ch := make(chan struct{}, 1)
	c.watchers = append(c.watchers, ch)
	stop = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if i := slices.Index(c.watchers, ch); i >= 0 {
			c.watchers = slices.Delete(c.watchers, i, i+1)
		}
	}
	return ch, stop, true
}
