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
