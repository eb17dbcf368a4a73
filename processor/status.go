package processor

import (
	"go.opentelemetry.io/otel/attribute"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// otherAgent replaces agent names beyond Config.MaxAgents in status series.
const otherAgent = "_other"

// statusKey identifies a status series.
type statusKey struct {
	agent string
	state pb.AgentState
}

// statusTable holds the status transition counts and the number of tracked
// conversations per state. Guarded by Processor.mu.
type statusTable struct {
	maxAgents     int
	agents        map[string]string // agent name as sent -> interned label value
	transitions   map[statusKey]int64
	conversations map[statusKey]int64
	sets          map[statusKey]attribute.Set
}

func newStatusTable(maxAgents int) statusTable {
	return statusTable{
		maxAgents:     maxAgents,
		agents:        make(map[string]string),
		transitions:   make(map[statusKey]int64),
		conversations: make(map[statusKey]int64),
		sets:          make(map[statusKey]attribute.Set),
	}
}

// key returns the series key of agent in state, within the agent bound.
func (t *statusTable) key(agent string, state pb.AgentState) statusKey {
	name, ok := t.agents[agent]
	if !ok {
		if len(t.agents) >= t.maxAgents {
			name = otherAgent
		} else {
			name = clone(agent)
			t.agents[name] = name
		}
	}
	k := statusKey{agent: name, state: state}
	if _, ok := t.sets[k]; !ok {
		t.sets[k] = attribute.NewSet(
			catalog.AttrAgentName.String(name),
			catalog.AttrAgentState.String(StateName(state)),
		)
	}
	return k
}

// applyStatus moves a conversation to state. Repeating the current state is
// not a transition. p.mu is held.
func (p *Processor) applyStatus(c *conversation, agent string, state pb.AgentState) {
	if c.state == state {
		return
	}
	if agent == "" {
		agent = c.agent
	}
	k := p.status.key(agent, state)
	p.status.transitions[k]++
	if !c.closed { // a closed conversation is in no state of the gauge
		if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
			p.status.conversations[c.statusKey]--
		}
		p.status.conversations[k]++
	}
	c.state, c.statusKey = state, k
}
