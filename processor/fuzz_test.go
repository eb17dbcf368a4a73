package processor

import "testing"

// FuzzParseCursor feeds arbitrary ListUsage page tokens to the decoder: it
// must never panic, and a token it accepts must round-trip.
func FuzzParseCursor(f *testing.F) {
	f.Add(cursor{trackedAt: 1_800_000_000_000_000_000, id: "conv-1"}.String())
	f.Add("")
	f.Add("!!")
	f.Add("MTIzL2E")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parseCursor(token)
		if err != nil {
			return
		}
		back, err := parseCursor(c.String())
		if err != nil || back != c {
			t.Fatalf("cursor %+v does not round-trip: %+v, %v", c, back, err)
		}
	})
}

// FuzzStoredState feeds arbitrary bytes to the decoders of the stored state
// (a conversation record, a snapshot): damage on disk is an error, never a
// panic.
func FuzzStoredState(f *testing.F) {
	p, err := New(Config{MaxTracked: 10, IdleExpiry: 1}, Deps{})
	if err != nil {
		f.Fatal(err)
	}
	rec, err := encodeConversation(&conversation{id: "c", agent: "a", calls: 3, hasBudget: true, budget: 1,
		perTurn: []perTurn{{service: "agent", tokens: 5}}})
	if err != nil {
		f.Fatal(err)
	}
	agg, err := p.saveAggregate()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add(agg)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := New(Config{MaxTracked: 10, IdleExpiry: 1}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := q.decodeConversation(b); err == nil && c == nil {
			t.Fatal("no conversation and no error")
		}
		_ = q.restoreAggregate(b, func(string) (*conversation, error) { return nil, nil })
	})
}
