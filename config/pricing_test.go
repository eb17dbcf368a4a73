package config

import (
	"strings"
	"testing"
)

func TestPricingFormat(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"pricing:\n  table: p.json\n  format: litellm\n", ""},
		{"pricing:\n  table: p.yaml\n  format: agentmeter\n  overrides: o.yaml\n", ""},
		{"pricing:\n  format: litellm\n", "line 2: pricing.format is set but pricing.table is not"},
		{"pricing:\n  table: p.json\n  format: csv\n", `line 3: pricing.format must be litellm or agentmeter (or empty: told from the file), got "csv"`},
	} {
		_, err := Parse([]byte(tt.doc))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.doc, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v, want %q", tt.doc, err, tt.want)
		}
	}
}
