package processor

import (
	"container/list"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// evictReason says why a conversation stopped being tracked.
type evictReason int

const (
	evictIdle     evictReason = iota // no event for conversations.idle_expiry
	evictCapacity                    // room for a newer one under conversations.max_tracked
	evictClosed                      // closed, and conversations.closed_retention is over
	numEvictReasons
)

var evictReasonNames = [numEvictReasons]string{"idle", "capacity", "closed"}

// Ledger token types, in the order of conversation.tokens.
const (
	ledgerInput = iota
	ledgerOutput
	ledgerCacheRead
	ledgerCacheWrite
	ledgerCacheWrite1h
	ledgerReasoning
	numLedgerTokens
)

// maxServices bounds the llm_service values kept per conversation; beyond
// it, per-turn tokens go to "_other".
const maxServices = 8

// perTurn is the latest call's prompt + completion tokens of one llm_service.
type perTurn struct {
	service string
	tokens  int64
}

// conversation is the ledger entry of one conversation: what OpenHands'
// Metrics keeps, plus lifecycle. Guarded by Processor.mu.
type conversation struct {
	id        string
	agent     string
	state     pb.AgentState
	statusKey statusKey
	lastSeen  int64 // unix nanoseconds of the last event received (idle expiry)
	trackedAt int64 // unix nanoseconds it was first tracked (ListUsage order)
	elem      *list.Element
	removed   bool

	firstEvent, lastEvent int64 // event times, unix nanoseconds

	cost          [numCostSources]float64
	unpriced      int64
	tokens        [numLedgerTokens]int64
	contextWindow int64 // the largest seen
	contextUtil   float64
	perTurn       []perTurn
	calls, failed int64
	faults        int64

	created     bool
	trigger     pb.ConversationTrigger
	budget      float64 // USD; hasBudget says whether there is one
	hasBudget   bool
	crossed     uint8 // bit i: budgetThresholds[i] crossed
	closed      bool
	closeReason pb.CloseReason
	closedAt    int64

	// watchers are signalled (without blocking) on every change.
	watchers []chan struct{}

	// dirty: changed since its record was last stored (durable mode);
	// version counts the changes, so that a snapshot knows whether what it
	// wrote is still current.
	dirty   bool
	version uint64
}

// totalCost is reported + computed cost.
func (c *conversation) totalCost() float64 { return c.cost[costReported] + c.cost[costComputed] }

// setPerTurn records the latest call's tokens of service, so that a
// condenser call never overwrites the agent's.
func (c *conversation) setPerTurn(service string, tokens int64) {
	for i := range c.perTurn {
		if c.perTurn[i].service == service {
			c.perTurn[i].tokens = tokens
			return
		}
	}
	if len(c.perTurn) >= maxServices {
		service = "_other"
		for i := range c.perTurn {
			if c.perTurn[i].service == service {
				c.perTurn[i].tokens = tokens
				return
			}
		}
		c.perTurn[len(c.perTurn)-1] = perTurn{service: service, tokens: tokens}
		return
	}
	c.perTurn = append(c.perTurn, perTurn{service: clone(service), tokens: tokens})
}

// changed signals the conversation's watchers.
func (c *conversation) changed() {
	for _, w := range c.watchers {
		select {
		case w <- struct{}{}:
		default: // a signal is pending already: changes coalesce
		}
	}
}

// conversations tracks conversations by id, in least-recently-active order,
// within a bound. Guarded by Processor.mu.
type conversations struct {
	max     int
	byID    map[string]*conversation
	lru     *list.List // front = most recently active
	closed  []*conversation
	evicted [numEvictReasons]int64
}

func newConversations(maxTracked int) *conversations {
	return &conversations{max: maxTracked, byID: make(map[string]*conversation), lru: list.New()}
}

// touch returns the conversation id, tracking it when new, and marks it
// active at now. Making room for a new one evicts the least recently active
// and calls forget for it.
func (cs *conversations) touch(id string, now int64, forget func(*conversation, evictReason)) *conversation {
	if c, ok := cs.byID[id]; ok {
		c.lastSeen = now
		cs.lru.MoveToFront(c.elem)
		return c
	}
	if len(cs.byID) >= cs.max {
		cs.remove(cs.lru.Back().Value.(*conversation), evictCapacity, forget)
	}
	c := &conversation{id: clone(id), lastSeen: now, trackedAt: now}
	c.elem = cs.lru.PushFront(c)
	cs.byID[c.id] = c
	return c
}

// expireIdle drops the conversations last active at or before cutoff.
func (cs *conversations) expireIdle(cutoff int64, forget func(*conversation, evictReason)) {
	for e := cs.lru.Back(); e != nil; e = cs.lru.Back() {
		c := e.Value.(*conversation)
		if c.lastSeen > cutoff {
			return
		}
		cs.remove(c, evictIdle, forget)
	}
}

// expireClosed drops the conversations closed at or before cutoff.
func (cs *conversations) expireClosed(cutoff int64, forget func(*conversation, evictReason)) {
	n := 0
	for _, c := range cs.closed {
		if c.removed || !c.closed {
			n++ // gone already, or reopened: drop from the queue
			continue
		}
		if c.closedAt > cutoff {
			break
		}
		cs.remove(c, evictClosed, forget)
		n++
	}
	cs.closed = cs.closed[n:]
}

func (cs *conversations) remove(c *conversation, reason evictReason, forget func(*conversation, evictReason)) {
	cs.lru.Remove(c.elem)
	delete(cs.byID, c.id)
	c.removed = true
	forget(c, reason)
	for _, w := range c.watchers {
		close(w)
	}
	c.watchers = nil
}
