package processor

import (
	"container/list"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// evictReason says why a conversation stopped being tracked.
type evictReason int

const (
	evictIdle evictReason = iota
	evictCapacity
	numEvictReasons
)

var evictReasonNames = [numEvictReasons]string{"idle", "capacity"}

// conversation is what the processor tracks of one conversation.
type conversation struct {
	id        string
	agent     string
	state     pb.AgentState
	statusKey statusKey
	lastSeen  int64 // unix nanoseconds of the last event received
	elem      *list.Element
}

// conversations tracks conversations by id, in least-recently-active order,
// within a bound. Guarded by Processor.mu.
type conversations struct {
	max     int
	byID    map[string]*conversation
	lru     *list.List // front = most recently active
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
	c := &conversation{id: clone(id), lastSeen: now}
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

func (cs *conversations) remove(c *conversation, reason evictReason, forget func(*conversation, evictReason)) {
	cs.lru.Remove(c.elem)
	delete(cs.byID, c.id)
	forget(c, reason)
}
