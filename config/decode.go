package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/agentmeter/agentmeter/internal/yamldecode"
)

// Parse decodes a YAML configuration over Default and validates it.
//
// ${env:NAME} and ${env:NAME:-default} in a value are replaced by the
// environment variable NAME: empty when it is unset and has no default,
// the default only when it is unset. $$ is a literal $. Expansion applies to
// values, never to keys or comments, and an expanded value cannot change
// the structure of the document; a plain (unquoted) value is typed after
// expansion, so `max_tracked: ${env:N}` is an int, and a quoted one stays a
// string.
//
// Decoding is strict: an unknown or repeated key, a value of the wrong type
// and a malformed ${...} are errors naming the line and the dotted path, such
// as "line 7: exporters.otlp.endpiont: unknown key". A key that is omitted or
// left empty keeps its default; an empty file is Default. An
// exporters.otlp.timeout the file leaves out follows a shorter
// exporters.otlp.interval. Parse reports every
// decoding and Validate problem at once, joined with errors.Join and in line
// order. On error the returned Config is the zero Config.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	root, err := yamldecode.ParseYAML(data)
	if err != nil {
		return Config{}, err
	}
	d := decoder{lookupEnv: os.LookupEnv, lines: map[string]int{}, set: map[string]bool{}}
	if root != nil {
		d.decodeStruct(root, reflect.ValueOf(&cfg).Elem(), "")
	}
	if cfg.Exporters.OTLP.Protocol == ProtocolHTTPProtobuf && !d.set["exporters.otlp.endpoint"] {
		cfg.Exporters.OTLP.Endpoint = defaultOTLPHTTPEndpoint
	}
	// The default timeout follows a shorter interval, so that a default
	// the file never wrote cannot make it invalid.
	if o := &cfg.Exporters.OTLP; !d.set["exporters.otlp.timeout"] && o.Interval > 0 {
		o.Timeout = min(o.Timeout, o.Interval)
	}

	for _, err := range flatten(cfg.Validate()) {
		var p *problem
		if errors.As(err, &p) {
			if d.w.Failed(p.path) || d.w.Failed(p.also) {
				continue // its value did not decode: that is the problem to report
			}
			p.line = d.lines[p.path]
			if p.line == 0 {
				p.line = d.lines[p.also] // the value that made a default wrong
			}
		}
		d.w.Add(err)
	}
	if err := d.w.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// flatten lists the leaves of a tree of errors.Join errors.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// decoder walks a YAML node tree along the Config struct, decoding each
// value it can and recording a problem for each it cannot.
type decoder struct {
	lookupEnv func(string) (string, bool)
	w         yamldecode.Walker // the problems, and the paths that failed
	lines     map[string]int    // dotted path → line of its value in the file
	set       map[string]bool   // dotted path → the file gave it a non-empty value
}

var durationType = reflect.TypeFor[time.Duration]()

// fail records a problem with the value at path.
func (d *decoder) fail(line int, path, format string, args ...any) {
	d.w.FailLine(line, path, format, args...)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	line := n.Line
	n, ok := d.expand(n, line, path)
	if !ok || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(line, path, "cannot decode %s as a mapping", describe(n))
		return
	}
	fields := make(map[string]int, v.NumField())
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		fields[name] = i
	}
	d.w.Mapping(n, path, func(key string, val *yaml.Node, p string) bool {
		idx, ok := fields[key]
		if !ok {
			return false
		}
		d.lines[p] = val.Line
		d.decodeValue(val, v.Field(idx), p)
		return true
	})
}

func (d *decoder) decodeValue(n *yaml.Node, v reflect.Value, path string) {
	switch {
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
		return
	case v.Kind() == reflect.Map:
		d.decodeHeaders(n, v, path)
		return
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		d.decodeStrings(n, v, path)
		return
	}
	line := n.Line
	n, ok := d.expand(n, line, path)
	if !ok {
		return
	}
	if isNull(n) {
		if v.Kind() == reflect.Pointer {
			v.SetZero()
		}
		return
	}
	typ := typeName(v.Type())
	if n.Kind != yaml.ScalarNode {
		d.fail(line, path, "cannot decode %s as %s", describe(n), typ)
		return
	}
	tag := n.ShortTag()
	var err error
	switch {
	case v.Type() == durationType:
		var dur time.Duration
		if dur, err = time.ParseDuration(n.Value); err == nil {
			v.SetInt(int64(dur))
		} else {
			d.fail(line, path, "%s is not a Go duration such as 15s", quote(n.Value))
			return
		}
	case v.Kind() == reflect.String:
		v.SetString(n.Value)
	case v.Kind() == reflect.Bool && tag == "!!bool",
		v.Kind() == reflect.Int && tag == "!!int",
		v.Kind() == reflect.Uint32 && tag == "!!int":
		err = n.Decode(v.Addr().Interface())
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Float64 && (tag == "!!int" || tag == "!!float"):
		f := new(float64)
		if err = n.Decode(f); err == nil {
			v.Set(reflect.ValueOf(f))
		}
	default:
		err = errors.New("wrong type")
	}
	if err != nil {
		d.fail(line, path, "cannot decode %s as %s", describe(n), typ)
		return
	}
	d.set[path] = true
}

// decodeHeaders decodes a mapping of strings (exporters.otlp.headers).
// An empty mapping leaves the map nil.
func (d *decoder) decodeHeaders(n *yaml.Node, v reflect.Value, path string) {
	line := n.Line
	n, ok := d.expand(n, line, path)
	if !ok {
		return
	}
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(line, path, "cannot decode %s as a mapping of strings", describe(n))
		return
	}
	v.SetZero()
	d.w.Mapping(n, path, func(key string, val *yaml.Node, p string) bool {
		d.lines[p] = val.Line
		vline := val.Line
		val, ok := d.expand(val, vline, p)
		if !ok {
			return true
		}
		var s string
		switch {
		case isNull(val):
		case val.Kind == yaml.ScalarNode:
			s = val.Value
		default:
			d.fail(vline, p, "cannot decode %s as string", describe(val))
			return true
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		v.SetMapIndex(reflect.ValueOf(key), reflect.ValueOf(s))
		return true
	})
	d.set[path] = true
}

// expand follows an alias and expands ${env:...} in a scalar. A plain scalar
// that changes is typed again from its new text, as if written so.
func (d *decoder) expand(n *yaml.Node, line int, path string) (*yaml.Node, bool) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode || !strings.Contains(n.Value, "$") {
		return n, true
	}
	s, err := expandEnv(n.Value, d.lookupEnv)
	if err != nil {
		d.fail(line, path, "%v", err)
		return nil, false
	}
	if s == n.Value {
		return n, true
	}
	m := *n
	m.Value = s
	if n.Style&(yaml.TaggedStyle|yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
		m.Tag = ""
	}
	return &m, true
}

// expandEnv replaces ${env:NAME} and ${env:NAME:-default} in s; $$ is a
// literal $, and any other $ stays as it is. Like the OpenTelemetry
// Collector's env provider, the default applies only when NAME is unset.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated %s: write $$ for a literal $", quote(s[i:]))
			}
			ref := s[i : i+end+1]
			val, err := resolveRef(ref, lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(val)
			i += end + 1
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// resolveRef resolves one "${...}" reference.
func resolveRef(ref string, lookup func(string) (string, bool)) (string, error) {
	body := ref[2 : len(ref)-1]
	rest, ok := strings.CutPrefix(body, "env:")
	if !ok {
		return "", fmt.Errorf("%s: only ${env:NAME} and ${env:NAME:-default} are supported; write $$ for a literal $", quote(ref))
	}
	name, def, _ := strings.Cut(rest, ":-")
	if name == "" {
		return "", fmt.Errorf("%s names no environment variable", quote(ref))
	}
	if !validEnvName(name) {
		return "", fmt.Errorf("%s: %s is not a valid environment variable name (letters, digits, _; not starting with a digit)", quote(ref), quote(name))
	}
	if strings.Contains(def, "${") {
		return "", fmt.Errorf("%s: a default cannot hold another ${...}", quote(ref))
	}
	if val, ok := lookup(name); ok {
		return val, nil
	}
	return def, nil
}

func validEnvName(name string) bool {
	for i, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return name != ""
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration"
	case t.Kind() == reflect.Pointer:
		return "float"
	case t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.Kind().String()
}

func isNull(n *yaml.Node) bool     { return yamldecode.IsNull(n) }
func describe(n *yaml.Node) string { return yamldecode.Describe(n) }
func quote(s string) string        { return yamldecode.Quote(s) }
func join(path, key string) string { return yamldecode.JoinPath(path, key) }

// maxListItems bounds a list of strings (receiver.openhands.api_keys).
const maxListItems = 100

// decodeStrings decodes a list of strings (receiver.openhands.api_keys).
// An empty list leaves the slice nil.
func (d *decoder) decodeStrings(n *yaml.Node, v reflect.Value, path string) {
	line := n.Line
	n, ok := d.expand(n, line, path)
	if !ok {
		return
	}
	v.SetZero()
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(line, path, "cannot decode %s as a list of strings", describe(n))
		return
	}
	d.w.Sequence(n, path, maxListItems, func(_ int, item *yaml.Node, p string) {
		d.lines[p] = item.Line
		iline := item.Line
		item, ok := d.expand(item, iline, p)
		if !ok {
			return
		}
		var s string
		switch {
		case isNull(item):
		case item.Kind == yaml.ScalarNode:
			s = item.Value
		default:
			d.fail(iline, p, "cannot decode %s as string", describe(item))
			return
		}
		v.Set(reflect.Append(v, reflect.ValueOf(s)))
	})
	d.set[path] = true
}
