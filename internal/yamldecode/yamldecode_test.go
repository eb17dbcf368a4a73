package yamldecode

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestMappingProblems(t *testing.T) {
	root, err := ParseYAML([]byte("a: 1\nb: &x {c: 1}\na: 2\n<<: *x\n[k]: 1\nzz: 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	var w Walker
	var seen []string
	w.Mapping(root, "top", func(key string, _ *yaml.Node, path string) bool {
		seen = append(seen, path)
		return key != "zz"
	})
	if strings.Join(seen, ",") != "top.a,top.b,top.zz" {
		t.Errorf("keys passed: %v", seen)
	}
	want := []string{
		"line 3: top.a: repeated key (first at line 1)",
		"line 4: top.<<: merge keys (<<) are not supported",
		`line 5: top: keys must be plain names, got a sequence`,
		"line 6: top.zz: unknown key",
	}
	if got := w.Err().Error(); got != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if !w.Failed("top.zz") || w.Failed("top.b") {
		t.Error("Failed does not track the paths")
	}
}

func TestSequenceAndTopLevel(t *testing.T) {
	root, _ := ParseYAML([]byte("- 1\n- 2\n- 3\n"))
	var w Walker
	w.Sequence(root, "xs", 2, func(int, *yaml.Node, string) { t.Error("called past the limit") })
	w.Mapping(root, "", func(string, *yaml.Node, string) bool { return true })
	got := w.Err().Error()
	for _, s := range []string{"line 1: xs: has 3 items, more than the limit of 2", "line 1: the top level: must be a mapping, got a sequence"} {
		if !strings.Contains(got, s) {
			t.Errorf("%q lacks %q", got, s)
		}
	}
}

func TestParseYAML(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a: [\n", "line 1: invalid YAML"},
		{"a: 1\n---\nb: 2\n", "line 3: a file holds one YAML document, found a second"},
	} {
		_, err := ParseYAML([]byte(tt.in))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) || LineOf(err) == 0 {
			t.Errorf("ParseYAML(%q) = %v, want %q with a line", tt.in, err, tt.want)
		}
	}
	if n, err := ParseYAML([]byte("# only a comment\n---\n")); n != nil || err != nil {
		t.Errorf("empty document: %v %v", n, err)
	}
}

func TestParseJSON(t *testing.T) {
	n, err := ParseJSON([]byte("{\n  \"a\": 1.5,\n  \"b\": [true, null, \"s\"],\n  \"a\": 2\n}"), 8)
	if err != nil {
		t.Fatal(err)
	}
	if n.Content[0].Line != 2 || n.Content[2].Line != 3 || n.Content[4].Line != 4 || n.Content[1].ShortTag() != "!!float" {
		t.Errorf("lines or tags lost: %+v", n.Content)
	}
	var w Walker
	w.Mapping(n, "", func(string, *yaml.Node, string) bool { return true })
	if err := w.Err(); err == nil || !strings.Contains(err.Error(), "line 4: a: repeated key (first at line 2)") {
		t.Errorf("repeated JSON key: %v", err)
	}
	for in, want := range map[string]string{
		"[[[[[[[[[[1]]]]]]]]]]": "nested more than 8 deep",
		`{"a": 1} x`:            "unexpected data after the top-level value",
		"{\n\"a\": }":           "line 2: invalid JSON",
	} {
		_, err := ParseJSON([]byte(in), 8)
		var p *Problem
		if err == nil || !strings.Contains(err.Error(), want) || !errors.As(err, &p) {
			t.Errorf("ParseJSON(%q) = %v, want %q", in, err, want)
		}
	}
}

// FuzzParse checks that neither reader panics and that a walk of what they
// accept reports problems only with a path and a line or none.
func FuzzParse(f *testing.F) {
	f.Add([]byte("a: 1\nb: [1, 2]\n"), false)
	f.Add([]byte(`{"a": {"b": [1, "x", null]}, "a": 2}`), true)
	f.Add([]byte("a: &x [*x]\n<<: {b: 1}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		var n *yaml.Node
		var err error
		if isJSON {
			n, err = ParseJSON(data, 16)
		} else {
			n, err = ParseYAML(data)
		}
		if err != nil || n == nil {
			return
		}
		var w Walker
		var walk func(n *yaml.Node, path string, depth int)
		walk = func(n *yaml.Node, path string, depth int) {
			if depth > 20 {
				return
			}
			switch Deref(n).Kind {
			case yaml.MappingNode:
				w.Mapping(n, path, func(_ string, v *yaml.Node, p string) bool { walk(v, p, depth+1); return true })
			case yaml.SequenceNode:
				w.Sequence(n, path, 1000, func(_ int, v *yaml.Node, p string) { walk(v, p, depth+1) })
			}
		}
		walk(n, "", 0)
		_ = w.Err()
	})
}
