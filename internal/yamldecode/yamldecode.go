// Package yamldecode is the strict document walking that the config and
// the price tables share: one YAML document (or a JSON one, read into the
// same node tree with its lines), mappings whose repeated keys, merge keys
// (<<) and unknown keys are problems, and problems that name their dotted
// path and line so that every one of a file is reported at once.
package yamldecode

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a document.
type Problem struct {
	// Line is the 1-based line of the value at fault; 0 when unknown.
	Line int
	// Path is the dotted path of the value ("models[3].input"); "" is the
	// top level.
	Path string
	// Msg says what is wrong, without the path.
	Msg string
}

// Error returns "line 7: exporters.otlp.endpiont: unknown key"; without
// a path, "line 3: invalid YAML: ...".
func (p *Problem) Error() string {
	msg := p.Msg
	if p.Path != "" {
		msg = p.Path + ": " + msg
	}
	if p.Line > 0 {
		return "line " + strconv.Itoa(p.Line) + ": " + msg
	}
	return msg
}

// ProblemLine returns p.Line; see LineOf.
func (p *Problem) ProblemLine() int { return p.Line }

// LineOf returns the line of the first error in err's tree with a
// ProblemLine method (a *Problem, or a package's own problem type), else 0.
func LineOf(err error) int {
	var p interface{ ProblemLine() int }
	if errors.As(err, &p) {
		return p.ProblemLine()
	}
	return 0
}

// Walker walks a node tree and collects its problems. The zero Walker is
// ready to use. A Walker is used by one goroutine.
type Walker struct {
	problems []error
	failed   map[string]bool
}

// Fail records a problem with the value at path; n (may be nil) gives the line.
func (w *Walker) Fail(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	w.FailLine(line, path, format, args...)
}

// FailLine records a problem at a line. A problem with the top level
// (path "") says so.
func (w *Walker) FailLine(line int, path, format string, args ...any) {
	p := &Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
	if path == "" {
		p.Msg = "the top level: " + p.Msg
	}
	w.problems = append(w.problems, p)
	if w.failed == nil {
		w.failed = map[string]bool{}
	}
	w.failed[path] = true
}

// Add records a problem found outside the walk (such as a check across
// values).
func (w *Walker) Add(err error) { w.problems = append(w.problems, err) }

// Failed reports whether a problem was recorded for path.
func (w *Walker) Failed(path string) bool { return w.failed[path] }

// Problems returns the problems recorded so far, in the order found.
func (w *Walker) Problems() []error { return w.problems }

// Err returns every problem, ordered by line (those without one last) and
// joined with errors.Join; nil when there is none.
func (w *Walker) Err() error { return Join(w.problems) }

// Join orders problems by line (those without a line last, otherwise
// stable) and joins them with errors.Join.
func Join(problems []error) error {
	if len(problems) == 0 {
		return nil
	}
	sorted := slices.Clone(problems)
	key := func(err error) int {
		if l := LineOf(err); l > 0 {
			return l
		}
		return int(^uint(0) >> 1)
	}
	slices.SortStableFunc(sorted, func(a, b error) int { return cmp.Compare(key(a), key(b)) })
	return errors.Join(sorted...)
}

// Mapping calls f for every key of the mapping n, in order, with the key's
// dotted path. It follows aliases; it reports, and does not pass to f, a key
// that is not a plain scalar, a merge key and a repeated key; it reports a
// key for which f returns false as unknown. It reports n itself when it is
// not a mapping and returns false then.
func (w *Walker) Mapping(n *yaml.Node, path string, f func(key string, val *yaml.Node, path string) bool) bool {
	n = Deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		w.Fail(n, path, "must be a mapping, got %s", Describe(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := Deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			w.Fail(n.Content[i], path, "keys must be plain names, got %s", Describe(k))
			continue
		}
		p := JoinPath(path, k.Value)
		if k.ShortTag() == "!!merge" {
			w.Fail(k, p, "merge keys (<<) are not supported")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			w.Fail(k, p, "repeated key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !f(k.Value, v, p) {
			w.Fail(k, p, "unknown key")
		}
	}
	return true
}

// Sequence calls f for every item of the sequence n, with its path
// ("models[3]"). It reports n when it is not a sequence or has more than
// limit items.
func (w *Walker) Sequence(n *yaml.Node, path string, limit int, f func(i int, item *yaml.Node, path string)) {
	n = Deref(n)
	if n == nil || n.Kind != yaml.SequenceNode {
		w.Fail(n, path, "must be a list, got %s", Describe(n))
		return
	}
	if len(n.Content) > limit {
		w.Fail(n, path, "has %d items, more than the limit of %d", len(n.Content), limit)
		return
	}
	for i, item := range n.Content {
		f(i, item, fmt.Sprintf("%s[%d]", path, i))
	}
}

// Deref follows aliases (*anchor) to the node they refer to.
func Deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is absent or a YAML null.
func IsNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// JoinPath appends key to a dotted path.
func JoinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Describe names a value in a message: its quoted text, or its kind.
func Describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias"
	}
	return Quote(n.Value)
}

// Quote quotes s for a message, cut to a readable length.
func Quote(s string) string {
	const limit = 64
	if r := []rune(s); len(r) > limit {
		return strconv.Quote(string(r[:limit])) + "..."
	}
	return strconv.Quote(s)
}

// ParseYAML parses data, which must hold at most one YAML document, and
// returns its top-level node: nil for a file without content (or only a
// null). A syntax
// error is a *Problem with the line YAML reports.
func ParseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	case len(next.Content) > 0 && !IsNull(next.Content[0]):
		return nil, &Problem{Line: next.Content[0].Line, Msg: "a file holds one YAML document, found a second"}
	}
	if len(doc.Content) == 0 || IsNull(doc.Content[0]) {
		return nil, nil
	}
	return doc.Content[0], nil
}

// syntaxError turns "yaml: line 3: did not find expected key" into a
// Problem at line 3.
func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, text, ok := strings.Cut(rest, ": ")
		if n, err := strconv.Atoi(num); ok && err == nil {
			return &Problem{Line: n, Msg: "invalid YAML: " + text}
		}
	}
	return &Problem{Msg: "invalid YAML: " + msg}
}

// ParseJSON reads a JSON document into the same node tree ParseYAML
// returns, with lines, so that both are walked by the same code; unlike
// encoding/json into a map, a repeated key stays visible to Mapping.
// Numbers keep their text (tag !!int or !!float). It returns nil for an
// empty document, and an error for nesting deeper than maxDepth or data
// after the top-level value.
func ParseJSON(data []byte, maxDepth int) (*yaml.Node, error) {
	j := &jsonReader{data: data, dec: json.NewDecoder(bytes.NewReader(data)), maxDepth: maxDepth}
	j.dec.UseNumber()
	for i, b := range data {
		if b == '\n' {
			j.newlines = append(j.newlines, i)
		}
	}
	n, err := j.value(0)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, &Problem{Line: j.line(), Msg: "invalid JSON: " + err.Error()}
	}
	if _, err := j.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &Problem{Line: j.line(), Msg: "invalid JSON: unexpected data after the top-level value"}
	}
	return n, nil
}

type jsonReader struct {
	data     []byte
	dec      *json.Decoder
	newlines []int
	maxDepth int
}

// line returns the line of the next token.
func (j *jsonReader) line() int {
	off := int(j.dec.InputOffset())
	for off < len(j.data) && strings.IndexByte(" \t\r\n,:", j.data[off]) >= 0 {
		off++
	}
	return sort.SearchInts(j.newlines, off) + 1
}

func (j *jsonReader) value(depth int) (*yaml.Node, error) {
	if depth > j.maxDepth {
		return nil, fmt.Errorf("nested more than %d deep", j.maxDepth)
	}
	line := j.line()
	tok, err := j.dec.Token()
	if err != nil {
		return nil, err
	}
	n := &yaml.Node{Line: line}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
			for j.dec.More() {
				kline := j.line()
				kt, err := j.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				val, err := j.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key, Line: kline}, val)
			}
		case '[':
			n.Kind, n.Tag = yaml.SequenceNode, "!!seq"
			for j.dec.More() {
				val, err := j.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, val)
			}
		default:
			return nil, fmt.Errorf("unexpected %q", v)
		}
		if _, err := j.dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	case string:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!str", v
	case json.Number:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!int", v.String()
		if strings.ContainsAny(n.Value, ".eE") {
			n.Tag = "!!float"
		}
	case bool:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!bool", strconv.FormatBool(v)
	case nil:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!null", "null"
	}
	return n, nil
}
