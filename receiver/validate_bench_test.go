package receiver

import "testing"

// BenchmarkValidate validates a typical valid LLM call event: every string and
// count set, a time and a cost. It must report 0 allocs/op.
func BenchmarkValidate(b *testing.B) {
	ev := valLLMEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, reason, ok := Validate(ev, valNow, valLimits); !ok {
			b.Fatal(reason)
		}
	}
}
