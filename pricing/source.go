package pricing

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentmeter/agentmeter/internal/yamldecode"
)

// Formats of a price table file.
const (
	// FormatAuto tells the format from the file: a JSON object with a
	// "models" list is agentmeter's, one of LiteLLM entries is LiteLLM's.
	FormatAuto = ""
	// FormatLiteLLM is LiteLLM's model_prices_and_context_window.json.
	FormatLiteLLM = "litellm"
	// FormatAgentmeter is agentmeter's own YAML or JSON table.
	FormatAgentmeter = "agentmeter"
)

// Source names the files a price table is read from.
type Source struct {
	// Table is the base table: a LiteLLM price file or an agentmeter
	// table. "" is the built-in snapshot of LiteLLM's list (Default).
	Table string
	// Format is the base table's format: FormatAuto, FormatLiteLLM or
	// FormatAgentmeter.
	Format string
	// Overrides is an agentmeter table layered on the base one
	// (negotiated prices, private models, aliases, effective_from). "" is
	// none.
	Overrides string
}

// Load reads the source's files and builds their table.
func (s Source) Load() (*Table, error) {
	table, overrides, err := s.read()
	if err != nil {
		return nil, err
	}
	return s.build(table, overrides)
}

// read reads the source's files; nil for a file it does not name.
func (s Source) read() (table, overrides []byte, err error) {
	if s.Table != "" {
		if table, err = readLimited(s.Table); err != nil {
			return nil, nil, fmt.Errorf("read price table: %w", err)
		}
	}
	if s.Overrides != "" {
		if overrides, err = readLimited(s.Overrides); err != nil {
			return nil, nil, fmt.Errorf("read price overrides: %w", err)
		}
	}
	return table, overrides, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTableBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxTableBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxTableBytes)
	}
	return data, nil
}

// build parses what read returned.
func (s Source) build(tableData, overData []byte) (*Table, error) {
	var specs []spec
	var m meta
	var rep Report
	format := FormatLiteLLM
	if s.Table == "" {
		d := Default()
		if s.Overrides == "" {
			return d, nil
		}
		specs, m, rep, format = defaultSpecs()
	} else {
		f, err := s.formatOf(tableData)
		if err != nil {
			return nil, err
		}
		format = f
		pf := f
		if f == FormatAgentmeter {
			pf = "yaml"
			if strings.EqualFold(filepath.Ext(s.Table), ".json") {
				pf = "json"
			}
		}
		specs, m, rep, err = read(tableData, pf)
		if err != nil {
			return nil, fmt.Errorf("load price table %q: %w", s.Table, err)
		}
		m.version = versionOf(m.version, tableData)
	}
	var overSpecs []spec
	overVersion := ""
	if s.Overrides != "" {
		pf := "yaml"
		if strings.EqualFold(filepath.Ext(s.Overrides), ".json") {
			pf = "json"
		}
		specs, om, _, err := read(overData, pf)
		if err != nil {
			return nil, fmt.Errorf("load price overrides %q: %w", s.Overrides, err)
		}
		for i := range specs {
			specs[i].price.origin = "overrides:" + specs[i].price.origin
		}
		overSpecs = specs
		overVersion = versionOf(om.version, overData)
		if m.aliases == nil {
			m.aliases = map[string]string{}
		}
		for k, v := range om.aliases {
			m.aliases[k] = v
		}
		m.sources = append(m.sources, om.sources...)
	}
	t, errs := build(specs, overSpecs, m.aliases)
	if len(errs) > 0 {
		what := fmt.Sprintf("price table %q", s.Table)
		if s.Overrides != "" {
			what = fmt.Sprintf("price table %q with overrides %q", s.Table, s.Overrides)
		}
		return nil, fmt.Errorf("load %s: %w", what, yamldecode.Join(errs))
	}
	t.version, t.asOf, t.sources, t.report, t.format = m.version, m.asOf, m.sources, rep, format
	t.source = s.Table
	if s.Table == "" {
		t.source = Default().Source()
	}
	if overVersion != "" {
		t.version += "+" + overVersion
	}
	return t, nil
}

// formatOf returns the base table's format, declared or told from data.
func (s Source) formatOf(data []byte) (string, error) {
	switch s.Format {
	case FormatLiteLLM, FormatAgentmeter:
		return s.Format, nil
	case FormatAuto:
	default:
		return "", fmt.Errorf("unknown price table format %q, want litellm or agentmeter", s.Format)
	}
	switch ext := strings.ToLower(filepath.Ext(s.Table)); ext {
	case ".yaml", ".yml":
		return FormatAgentmeter, nil
	case ".json":
	default:
		return "", fmt.Errorf("price table %q: unknown extension %q, want .json, .yaml or .yml (or declare pricing.format)", s.Table, ext)
	}
	return DetectFormat(data)
}

// DetectFormat tells a JSON price table's format: agentmeter's when its
// top-level object has a "models" key, LiteLLM's when its values are
// objects with a litellm_provider, mode or input_cost_per_token.
func DetectFormat(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", errors.New("cannot tell the price table's format: it is not a JSON object (declare pricing.format)")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("cannot tell the price table's format: invalid JSON: %w", err)
		}
		key, _ := tok.(string)
		if key == "models" || key == "version" || key == "provider_aliases" {
			return FormatAgentmeter, nil
		}
		var v map[string]json.RawMessage
		if err := dec.Decode(&v); err != nil {
			var ute *json.UnmarshalTypeError
			if errors.As(err, &ute) {
				continue
			}
			return "", fmt.Errorf("cannot tell the price table's format: invalid JSON: %w", err)
		}
		for _, k := range []string{"litellm_provider", "mode", "input_cost_per_token"} {
			if _, ok := v[k]; ok {
				return FormatLiteLLM, nil
			}
		}
	}
	return "", errors.New("cannot tell the price table's format: neither a \"models\" list nor LiteLLM entries (declare pricing.format)")
}

// Snapshot describes the built-in price table: which LiteLLM release's
// price list it is and when it was taken (scripts/refresh-prices.sh).
type Snapshot struct {
	// Package and Version are the PyPI release the list was taken from.
	Package string `json:"package"`
	Version string `json:"version"`
	// File is the list's path inside the release's wheel.
	File string `json:"file"`
	// Taken is the date the snapshot was taken, YYYY-MM-DD.
	Taken string `json:"taken"`
	// SHA256 is the hex SHA-256 of the uncompressed list.
	SHA256 string `json:"sha256"`
}

// Source returns "pypi:litellm==1.110.2".
func (s Snapshot) Source() string { return "pypi:" + s.Package + "==" + s.Version }

//go:embed snapshot/model_prices_and_context_window.json.gz
var snapshotGzip []byte

//go:embed snapshot/snapshot.json
var snapshotMeta []byte

// builtin is the built-in table, read once.
type builtin struct {
	snap  Snapshot
	specs []spec
	rep   Report
	table *Table
	err   error
}

var loadBuiltin = sync.OnceValue(func() *builtin {
	b := &builtin{}
	b.err = func() error {
		if err := json.Unmarshal(snapshotMeta, &b.snap); err != nil {
			return fmt.Errorf("snapshot.json: %w", err)
		}
		data, err := gunzipSnapshot()
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != b.snap.SHA256 {
			return errors.New("the snapshot's SHA-256 is not the one snapshot.json records")
		}
		b.specs, _, b.rep, err = read(data, FormatLiteLLM)
		if err != nil {
			return err
		}
		t, errs := build(b.specs, nil, nil)
		if len(errs) > 0 {
			return yamldecode.Join(errs)
		}
		t.version = "litellm-" + b.snap.Version
		t.asOf, _ = time.Parse(time.DateOnly, b.snap.Taken)
		t.format, t.source, t.report = FormatLiteLLM, b.snap.Source(), b.rep
		b.table = t
		return nil
	}()
	if b.err != nil {
		// Unreachable: TestDefault proves the embedded snapshot reads. An
		// empty table prices nothing, which is safe.
		t, _ := build(nil, nil, nil)
		t.version, t.format = "invalid-embedded-table", FormatLiteLLM
		b.table = t
	}
	return b
})

// gunzipSnapshot returns the embedded LiteLLM list, uncompressed.
func gunzipSnapshot() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(snapshotGzip))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(zr, maxTableBytes+1))
}

// Default returns the built-in price table: the snapshot of LiteLLM's
// price list embedded in the binary (pricing/snapshot). It is read once
// and shared.
func Default() *Table { return loadBuiltin().table }

// DefaultSnapshot describes the built-in table's snapshot.
func DefaultSnapshot() Snapshot { return loadBuiltin().snap }

// defaultSpecs returns fresh copies of the built-in table's entries, to
// layer overrides on.
func defaultSpecs() ([]spec, meta, Report, string) {
	b := loadBuiltin()
	specs := make([]spec, len(b.specs))
	for i, s := range b.specs {
		p := *s.price
		p.tiers = slices.Clone(p.tiers)
		s.price = &p
		specs[i] = s
	}
	m := meta{version: b.table.version, asOf: b.table.asOf}
	return specs, m, b.rep, FormatLiteLLM
}
