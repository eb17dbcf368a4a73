package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

// TestShippedConfigIsDefault keeps config.yaml at the repository root and
// Default() saying the same thing.
func TestShippedConfigIsDefault(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatalf("Load(config.yaml): %v", err)
	}
	if want := Default(); !reflect.DeepEqual(cfg, want) {
		t.Errorf("config.yaml decodes to\n%+v\nwant Default()\n%+v", cfg, want)
	}
}

// TestShippedConfigNamesEveryKey checks that config.yaml spells out every
// key, each under its own comment.
func TestShippedConfigNamesEveryKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for _, path := range leafPaths(reflect.TypeFor[Config](), "") {
		parts := strings.Split(path, ".")
		i, depth := 0, 0
		for ; i < len(lines) && depth < len(parts); i++ {
			indent := strings.Repeat("  ", depth)
			if strings.HasPrefix(lines[i], indent+parts[depth]+":") {
				depth++
			}
		}
		if depth < len(parts) {
			t.Errorf("config.yaml does not set %s", path)
			continue
		}
		if prev := strings.TrimSpace(lines[i-2]); !strings.HasPrefix(prev, "# ") {
			t.Errorf("config.yaml: %s has no comment on the line above", path)
		}
	}
}

func TestParseGood(t *testing.T) {
	budget := 2.5
	tests := []struct {
		name string
		file string
		want func(*Config)
	}{
		{name: "empty file", file: "good_empty.yaml", want: func(*Config) {}},
		{name: "every key", file: "good_full.yaml", want: func(c *Config) {
			c.Receiver = Receiver{
				GRPC: GRPC{Endpoint: "unix:///run/agentmeter/agentmeter.sock", MaxRecvMsgSizeMiB: 4, MaxConcurrentStreams: 64,
					MaxConnections: 8, MaxInflightRPCs: 5, MaxInflightMiB: 12, ReceiveTimeout: 15 * time.Second,
					MaxConnectionIdle: time.Minute, HandshakeTimeout: 3 * time.Second,
					TLS: GRPCTLS{CertFile: "tls/tls.crt", KeyFile: "tls/tls.key", ClientCAFile: "/etc/agentmeter/ca.crt"}},
				Auth:                ReceiverAuth{TokenFile: "token"},
				MaxEventsPerRequest: 500,
				DedupeWindow:        0,
				DedupeMaxIDs:        10,
				MaxFutureSkew:       30 * time.Second,
				OpenHands:           OpenHands{Enabled: true, Path: "/hooks/openhands", APIKeys: []string{"key-1", "key-2"}, MaxBodyMiB: 8},
			}
			c.HTTP = HTTP{Endpoint: "127.0.0.1:19464", WebConfigFile: "web-config.yml"}
			c.Exporters = Exporters{
				Prometheus: Prometheus{Enabled: false, Path: "/agentmeter/metrics"},
				OTLP: OTLP{
					Enabled:  true,
					Endpoint: "https://otel.example.com:4318/v1/metrics",
					Protocol: ProtocolHTTPProtobuf,
					Insecure: false,
					Headers:  map[string]string{"authorization": "Bearer abc123", "x-tenant": "42"},
					Interval: time.Minute,
					Timeout:  time.Minute,
				},
			}
			c.Conversations = Conversations{IdleExpiry: 2 * time.Hour, ClosedRetention: 0, MaxTracked: 1, DefaultMaxBudgetUSD: &budget}
			c.Pricing.Table = "prices.yaml"
			c.Pricing.Format = "agentmeter"
			c.Pricing.Overrides = "overrides.yaml"
			c.Storage = Storage{Directory: "/var/lib/agentmeter", Retention: 24 * time.Hour, Sync: false, SnapshotInterval: time.Minute}
			c.Shutdown.GracePeriod = 90 * time.Second
			c.Log = Log{Level: "debug", Format: "text"}
			c.Memory.LimitMiB = 96
		}},
		{name: "some keys, empty values keep defaults", file: "good_partial.yaml", want: func(c *Config) {
			c.Receiver.GRPC.Endpoint = ":4320"
			c.Exporters.OTLP.Enabled = true
			c.Exporters.OTLP.Protocol = ProtocolHTTPProtobuf
			c.Exporters.OTLP.Endpoint = "http://localhost:4318/v1/metrics"
		}},
		{name: "anchors and aliases", file: "good_anchors.yaml", want: func(c *Config) {
			c.Receiver.MaxFutureSkew = time.Minute
			c.Conversations.ClosedRetention = time.Minute
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse(%s): %v", tc.file, err)
			}
			want := Default()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%s) =\n%+v\nwant\n%+v", tc.file, got, want)
			}
		})
	}
}

// TestParseBad parses every testdata/bad_*.yaml. Each file states the exact
// messages it must produce, in order, on its "# want: " lines.
func TestParseBad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/bad_*.yaml: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for line := range strings.Lines(string(data)) {
				if msg, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "# want: "); ok {
					want = append(want, msg)
				}
			}
			if len(want) == 0 {
				t.Fatalf("%s has no # want: lines", file)
			}
			cfg, err := Parse(data)
			if err == nil {
				t.Fatalf("Parse(%s) succeeded, want errors:\n%s", file, strings.Join(want, "\n"))
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("Parse(%s) returned a non-zero Config with its error", file)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
				t.Errorf("Parse(%s) errors:\n%s\nwant:\n%s", file, err, strings.Join(want, "\n"))
			}
		})
	}
}

// garbage lists, for every leaf of Config, values that must be rejected:
// one of the wrong type, and out-of-range ones where a range exists.
var garbage = map[string][]string{
	"receiver.grpc.endpoint":               {"{a: 1}", "localhost", "localhost:99999", `"[::1]:x"`, "unix:relative.sock", "unix://", "unix:///run/", "unix:///" + strings.Repeat("a", 107)},
	"receiver.grpc.tls.cert_file":          {"{a: 1}", `"a\0b"`},
	"receiver.grpc.tls.key_file":           {"{a: 1}", `"a\0b"`, "server.key"},
	"receiver.grpc.tls.client_ca_file":     {"{a: 1}", `"a\0b"`, "ca.crt"},
	"receiver.auth.token_file":             {"{a: 1}", "[a]", `"a\0b"`},
	"receiver.grpc.max_recv_msg_size_mib":  {"abc", "0", "257", "-1"},
	"receiver.grpc.max_concurrent_streams": {"abc", "0", "-1", "4294967296"},
	"receiver.grpc.max_connections":        {"abc", "0", "-1", "65536", "1.5"},
	"receiver.grpc.max_inflight_rpcs":      {"abc", "-1", "1.5", "[1]"},
	"receiver.grpc.max_inflight_mib":       {"abc", "-1", "64MiB", "{a: 1}"},
	"receiver.grpc.receive_timeout":        {"abc", "0s", "-1s", "60"},
	"receiver.grpc.max_connection_idle":    {"abc", "0s", "-1m", "300"},
	"receiver.grpc.handshake_timeout":      {"abc", "0s", "-1s", "10"},
	"receiver.max_events_per_request":      {"abc", "0", "-1", "1e3"},
	"receiver.dedupe_window":               {"abc", "-1s", "600"},
	"receiver.dedupe_max_ids":              {"abc", "0", "-1"},
	"receiver.max_future_skew":             {"abc", "0s", "-1m"},
	"receiver.openhands.enabled":           {"abc", "1", "[true]"},
	"receiver.openhands.path":              {"{a: 1}", "openhands", "/", "/a b", "/openhands/", "/a/../b", "/healthz"},
	"receiver.openhands.api_keys":          {"abc", "{a: 1}", `[""]`, "[[a]]", `["a\nb"]`, `[" a"]`},
	"receiver.openhands.max_body_mib":      {"abc", "0", "257", "-1", "1.5"},
	"http.endpoint":                        {"[a, b]", "9464", "host:-1"},
	"http.web_config_file":                 {"{a: 1}", "[a]", `"a\0b"`},
	"exporters.prometheus.enabled":         {"abc", "1", "yes"},
	"exporters.prometheus.path":            {"{a: 1}", "metrics", "/healthz", "/readyz", "/a b", "/metrics/", "/a/../b"},
	"exporters.otlp.enabled":               {"abc", "0"},
	"exporters.otlp.endpoint":              {"{a: 1}", "localhost", ":4317", "localhost:0", "http://localhost:4317"},
	"exporters.otlp.protocol":              {"{a: 1}", "http", "GRPC", `""`},
	"exporters.otlp.insecure":              {"abc", "[true]"},
	"exporters.otlp.headers":               {"abc", "[a]", `{"a b": c}`, `{x-a: ""}`, `{x-a: "a\nb"}`, "{x-a: {b: c}}"},
	"exporters.otlp.interval":              {"abc", "0s", "-1s", "30"},
	"exporters.otlp.timeout":               {"abc", "0s", "-1s", "31s"},
	"conversations.idle_expiry":            {"abc", "0s", "-1s"},
	"conversations.closed_retention":       {"abc", "-1s"},
	"conversations.max_tracked":            {"abc", "0", "-1"},
	"conversations.default_max_budget_usd": {"abc", "0", "-1", ".inf", ".nan", "-.inf"},
	"pricing.table":                        {"{a: 1}", "[a]", `"a\0b"`},
	"pricing.format":                       {"{a: 1}", "yaml", "LiteLLM"},
	"pricing.overrides":                    {"{a: 1}", "[a]", `"a\0b"`},
	"storage.directory":                    {"{a: 1}", "[a]", `"a\0b"`},
	"storage.retention":                    {"abc", "-1s", "30"},
	"storage.sync":                         {"abc", "1", "yes"},
	"storage.min_free_mib":                 {"abc", "-1", "1.5"},
	"storage.snapshot_interval":            {"abc", "0s", "-1s"},
	"shutdown.grace_period":                {"abc", "0s", "-1s"},
	"log.level":                            {"{a: 1}", "INFO", "warning", `""`},
	"log.format":                           {"{a: 1}", "JSON", "logfmt"},
	"memory.limit_mib":                     {"abc", "0", "15", "-1", "1048577", "1.5", "128Mi"},
}

// TestEveryFieldRejectsGarbage sets each leaf of Config, one at a time, to
// each of its garbage values and checks that Parse names the leaf.
func TestEveryFieldRejectsGarbage(t *testing.T) {
	for _, path := range leafPaths(reflect.TypeFor[Config](), "") {
		values := garbage[path]
		if len(values) == 0 {
			t.Errorf("%s has no garbage case: add it to garbage", path)
			continue
		}
		for _, value := range values {
			doc := nested(path, value)
			t.Run(path+"="+value, func(t *testing.T) {
				_, err := Parse([]byte(doc))
				if err == nil {
					t.Fatalf("Parse accepted\n%s", doc)
				}
				depth := strings.Count(path, ".") + 1
				if want := fmt.Sprintf("line %d: %s", depth, path); !strings.HasPrefix(err.Error(), want) {
					t.Errorf("Parse error %q, want it to start with %q\n%s", err, want, doc)
				}
			})
		}
	}
	for path := range garbage {
		if !slices.Contains(leafPaths(reflect.TypeFor[Config](), ""), path) {
			t.Errorf("garbage names %s, which is not a leaf of Config", path)
		}
	}
}

// leafPaths lists the dotted YAML paths of the leaves of t.
func leafPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			panic("field without a yaml name: " + f.Name)
		}
		path := join(prefix, name)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, leafPaths(f.Type, path)...)
		} else {
			out = append(out, path)
		}
	}
	return out
}

// nested renders a YAML document setting the dotted path to value.
func nested(path, value string) string {
	var b strings.Builder
	parts := strings.Split(path, ".")
	for i, p := range parts {
		b.WriteString(strings.Repeat("  ", i) + p + ":")
		if i == len(parts)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestParseReportsEveryProblem checks that decode and value problems come
// together, all of them, in line order.
func TestParseReportsEveryProblem(t *testing.T) {
	doc := `receiver:
  grpc:
    max_recv_msg_size_mib: 0
  max_events_per_request: abc
  dedupe_window: 10 minutes
  bogus: 1
http:
  endpoint: nowhere
exporters:
  otlp:
    protocol: smoke-signals
    endpiont: x
conversations:
  max_tracked: 0
shutdown:
  grace_period: soon
log:
  level: loud
  format: xml
`
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("Parse accepted a file with eleven problems")
	}
	got := strings.Split(err.Error(), "\n")
	want := []string{
		"line 3: receiver.grpc.max_recv_msg_size_mib",
		"line 4: receiver.max_events_per_request",
		"line 5: receiver.dedupe_window",
		"line 6: receiver.bogus",
		"line 8: http.endpoint",
		"line 11: exporters.otlp.protocol",
		"line 12: exporters.otlp.endpiont",
		"line 14: conversations.max_tracked",
		"line 16: shutdown.grace_period",
		"line 18: log.level",
		"line 19: log.format",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d = %q, want it to start with %q", i, got[i], want[i])
		}
	}
}

func TestValidate(t *testing.T) {
	nan, zero := math.NaN(), 0.0
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // exact messages, in order; none = valid
	}{
		{name: "default", modify: func(*Config) {}},
		{name: "dedupe off ignores dedupe_max_ids", modify: func(c *Config) {
			c.Receiver.DedupeWindow, c.Receiver.DedupeMaxIDs = 0, 0
		}},
		{name: "closed retention zero", modify: func(c *Config) { c.Conversations.ClosedRetention = 0 }},
		{name: "listen on port 0 and any host", modify: func(c *Config) {
			c.Receiver.GRPC.Endpoint, c.HTTP.Endpoint = ":0", "[::]:0"
		}},
		{name: "timeout equal to interval", modify: func(c *Config) { c.Exporters.OTLP.Timeout = c.Exporters.OTLP.Interval }},
		{name: "binary grpc header", modify: func(c *Config) {
			c.Exporters.OTLP.Headers = map[string]string{"x-trace-bin": "\xff\xfe"}
		}},
		{name: "http header chars beyond grpc", modify: func(c *Config) {
			c.Exporters.OTLP.Protocol, c.Exporters.OTLP.Endpoint = ProtocolHTTPProtobuf, "http://c:4318/v1/metrics"
			c.Exporters.OTLP.Headers = map[string]string{"X-Odd!": "é"}
		}},
		{name: "zero config", modify: func(c *Config) { *c = Config{} }, want: []string{
			`receiver.grpc.endpoint must be host:port with a numeric port 0-65535, got ""`,
			"receiver.grpc.max_recv_msg_size_mib must be between 1 and 256, got 0",
			"receiver.grpc.max_concurrent_streams must be >= 1, got 0",
			"receiver.grpc.max_connections must be between 1 and 65535, got 0",
			"receiver.grpc.receive_timeout must be > 0, got 0s",
			"receiver.grpc.max_connection_idle must be > 0, got 0s",
			"receiver.grpc.handshake_timeout must be > 0, got 0s",
			"receiver.max_events_per_request must be >= 1, got 0",
			"receiver.max_future_skew must be > 0, got 0s",
			`receiver.openhands.path must start with "/" and name a path, such as /openhands, got ""`,
			"receiver.openhands.max_body_mib must be between 1 and 256, got 0",
			`http.endpoint must be host:port with a numeric port 0-65535, got ""`,
			`exporters.prometheus.path must start with "/", got ""`,
			`exporters.otlp.protocol must be "grpc" or "http/protobuf", got ""`,
			"exporters.otlp.interval must be > 0, got 0s",
			"exporters.otlp.timeout must be > 0, got 0s",
			"conversations.idle_expiry must be > 0, got 0s",
			"conversations.max_tracked must be >= 1, got 0",
			"storage.snapshot_interval must be > 0, got 0s",
			"shutdown.grace_period must be > 0, got 0s",
			`log.level must be one of debug, info, warn, error; got ""`,
			`log.format must be json or text, got ""`,
			"memory.limit_mib must be between 16 and 1048576, got 0",
		}},
		{name: "budget NaN", modify: func(c *Config) { c.Conversations.DefaultMaxBudgetUSD = &nan }, want: []string{
			"conversations.default_max_budget_usd must be a finite number > 0 (omit it for no budget), got NaN",
		}},
		{name: "budget zero", modify: func(c *Config) { c.Conversations.DefaultMaxBudgetUSD = &zero }, want: []string{
			"conversations.default_max_budget_usd must be a finite number > 0 (omit it for no budget), got 0",
		}},
		{name: "same port for both servers", modify: func(c *Config) { c.HTTP.Endpoint = "localhost:4320" }, want: []string{
			`http.endpoint must not use the port of receiver.grpc.endpoint (4320), got "localhost:4320"`,
		}},
		{name: "grpc header value not printable ASCII", modify: func(c *Config) {
			c.Exporters.OTLP.Headers = map[string]string{"x-name": "é"}
		}, want: []string{`exporters.otlp.headers: "x-name" has a value gRPC metadata cannot carry (printable ASCII only)`}},
		{name: "grpc metadata key", modify: func(c *Config) {
			c.Exporters.OTLP.Headers = map[string]string{"x-odd!": "v"}
		}, want: []string{`exporters.otlp.headers: "x-odd!" is not a valid gRPC metadata key (letters, digits and - _ . only)`}},
		{name: "header value with a newline", modify: func(c *Config) {
			c.Exporters.OTLP.Headers = map[string]string{"x-a": "a\r\nx-b: b"}
		}, want: []string{`exporters.otlp.headers: "x-a" has a value with control characters`}},
		{name: "http protocol needs a URL", modify: func(c *Config) { c.Exporters.OTLP.Protocol = ProtocolHTTPProtobuf }, want: []string{
			`exporters.otlp.endpoint must be an http:// or https:// URL with a path, such as http://localhost:4318/v1/metrics, for protocol http/protobuf, got "localhost:4317"`,
		}},
		{name: "prometheus path not clean", modify: func(c *Config) { c.Exporters.Prometheus.Path = "/a//b" }, want: []string{
			`exporters.prometheus.path must be a clean path (no trailing /, //, . or ..), got "/a//b"`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.modify(&c)
			err := c.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("AM_TEST_ENDPOINT", "otel.example.com:4317")
	t.Setenv("AM_TEST_EMPTY", "")
	t.Setenv("AM_TEST_MAX", "500")
	t.Setenv("AM_TEST_TRUE", "true")
	t.Setenv("AM_TEST_TOKEN", "s3cr3t: #not a comment, {not: flow}")
	t.Setenv("AM_TEST_DOLLAR", "a$b${env:AM_TEST_MAX}")
	t.Setenv("AM_TEST_UNSET", "") // so that it is restored after the test
	if err := os.Unsetenv("AM_TEST_UNSET"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		doc  string
		got  func(Config) any
		want any
	}{
		{"set", "http:\n  endpoint: ${env:AM_TEST_ENDPOINT}\n",
			func(c Config) any { return c.HTTP.Endpoint }, "otel.example.com:4317"},
		{"set wins over default", "http:\n  endpoint: ${env:AM_TEST_ENDPOINT:-localhost:1}\n",
			func(c Config) any { return c.HTTP.Endpoint }, "otel.example.com:4317"},
		{"unset takes default", "http:\n  endpoint: ${env:AM_TEST_UNSET:-localhost:1}\n",
			func(c Config) any { return c.HTTP.Endpoint }, "localhost:1"},
		{"unset without default is empty", "pricing:\n  table: \"${env:AM_TEST_UNSET}\"\n",
			func(c Config) any { return c.Pricing.Table }, ""},
		{"set but empty stays empty", "pricing:\n  table: \"x${env:AM_TEST_EMPTY:-default}\"\n",
			func(c Config) any { return c.Pricing.Table }, "x"},
		{"unset and unquoted keeps the key's default", "log:\n  level: ${env:AM_TEST_UNSET}\n",
			func(c Config) any { return c.Log.Level }, "info"},
		{"unset budget means no budget", "conversations:\n  default_max_budget_usd: ${env:AM_TEST_UNSET}\n",
			func(c Config) any { return c.Conversations.DefaultMaxBudgetUSD }, (*float64)(nil)},
		{"within text", "exporters:\n  otlp:\n    endpoint: ${env:AM_TEST_UNSET:-otel}:${env:AM_TEST_MAX}\n",
			func(c Config) any { return c.Exporters.OTLP.Endpoint }, "otel:500"},
		{"plain value typed after expansion", "receiver:\n  max_events_per_request: ${env:AM_TEST_MAX}\n",
			func(c Config) any { return c.Receiver.MaxEventsPerRequest }, 500},
		{"bool after expansion", "exporters:\n  otlp:\n    enabled: ${env:AM_TEST_TRUE}\n",
			func(c Config) any { return c.Exporters.OTLP.Enabled }, true},
		{"duration default", "shutdown:\n  grace_period: ${env:AM_TEST_UNSET:-1m}\n",
			func(c Config) any { return c.Shutdown.GracePeriod }, time.Minute},
		{"value cannot inject YAML", "exporters:\n  otlp:\n    headers:\n      authorization: Bearer ${env:AM_TEST_TOKEN}\n",
			func(c Config) any { return c.Exporters.OTLP.Headers["authorization"] }, "Bearer s3cr3t: #not a comment, {not: flow}"},
		{"expanded text is not expanded again", "pricing:\n  table: ${env:AM_TEST_DOLLAR}\n",
			func(c Config) any { return c.Pricing.Table }, "a$b${env:AM_TEST_MAX}"},
		{"$$ is a literal $", "pricing:\n  table: a$$b$${env:AM_TEST_MAX}\n",
			func(c Config) any { return c.Pricing.Table }, "a$b${env:AM_TEST_MAX}"},
		{"lone $ stays", "pricing:\n  table: $HOME/a$\n",
			func(c Config) any { return c.Pricing.Table }, "$HOME/a$"},
		{"comments are not expanded", "# ${broken} and ${env:AM_TEST_MAX}\npricing:\n  table: t # ${env:\n",
			func(c Config) any { return c.Pricing.Table }, "t"},
		{"through an alias", "http:\n  endpoint: &e ${env:AM_TEST_ENDPOINT}\nexporters:\n  otlp:\n    endpoint: *e\n",
			func(c Config) any { return c.Exporters.OTLP.Endpoint }, "otel.example.com:4317"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Parse:\n%s\nerror: %v", tc.doc, err)
			}
			if got := tc.got(cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestEnvExpansionErrors(t *testing.T) {
	t.Setenv("AM_TEST_MAX", "many")
	t.Setenv("AM_TEST_NUMBER", "7")
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"no name", "log:\n  level: ${env:}\n", `line 2: log.level: "${env:}" names no environment variable`},
		{"no scheme", "log:\n  level: ${LEVEL}\n",
			`line 2: log.level: "${LEVEL}": only ${env:NAME} and ${env:NAME:-default} are supported; write $$ for a literal $`},
		{"other scheme", "log:\n  level: ${file:/etc/level}\n",
			`line 2: log.level: "${file:/etc/level}": only ${env:NAME} and ${env:NAME:-default} are supported; write $$ for a literal $`},
		{"unterminated", "\nlog:\n  level: x${env:A\n", `line 3: log.level: unterminated "${env:A": write $$ for a literal $`},
		{"bad name", "log:\n  level: ${env:A-B}\n",
			`line 2: log.level: "${env:A-B}": "A-B" is not a valid environment variable name (letters, digits, _; not starting with a digit)`},
		{"expanded value of the wrong type", "receiver:\n  max_events_per_request: ${env:AM_TEST_MAX}\n",
			`line 2: receiver.max_events_per_request: cannot decode "many" as int`},
		{"quoted stays a string", "receiver:\n  max_events_per_request: \"${env:AM_TEST_NUMBER}\"\n",
			`line 2: receiver.max_events_per_request: cannot decode "7" as int`},
		{"in a header value", "exporters:\n  otlp:\n    headers:\n      authorization: Bearer ${TOKEN}\n",
			`line 4: exporters.otlp.headers.authorization: "${TOKEN}": only ${env:NAME} and ${env:NAME:-default} are supported; write $$ for a literal $`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || err.Error() != tc.want {
				t.Errorf("Parse error = %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	t.Run("missing file names the path", func(t *testing.T) {
		path := filepath.Join(dir, "absent.yaml")
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("load config %q: ", path)) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load(absent) = %v, want a wrapped os.ErrNotExist naming the path", err)
		}
	})
	t.Run("problems are wrapped with the path", func(t *testing.T) {
		path := write("bad.yaml", "log:\n  level: loud\n  formt: json\n")
		_, err := Load(path)
		want := fmt.Sprintf("load config %q: line 2: log.level must be one of debug, info, warn, error; got \"loud\"\nline 3: log.formt: unknown key", path)
		if err == nil || err.Error() != want {
			t.Errorf("Load error =\n%v\nwant\n%s", err, want)
		}
	})
	t.Run("relative file paths are resolved against the file", func(t *testing.T) {
		cfg, err := Load(write("rel.yaml", "pricing:\n  table: prices/table.yaml\n  overrides: prices/over.yaml\nhttp:\n  web_config_file: web.yml\n"+
			"receiver:\n  auth:\n    token_file: secrets/token\n  grpc:\n    tls:\n      cert_file: tls.crt\n      key_file: tls.key\n      client_ca_file: /abs/ca.crt\n"))
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, "prices", "table.yaml"); cfg.Pricing.Table != want {
			t.Errorf("pricing.table = %q, want %q", cfg.Pricing.Table, want)
		}
		if want := filepath.Join(dir, "prices", "over.yaml"); cfg.Pricing.Overrides != want {
			t.Errorf("pricing.overrides = %q, want %q", cfg.Pricing.Overrides, want)
		}
		if want := filepath.Join(dir, "web.yml"); cfg.HTTP.WebConfigFile != want {
			t.Errorf("http.web_config_file = %q, want %q", cfg.HTTP.WebConfigFile, want)
		}
		if want := filepath.Join(dir, "secrets", "token"); cfg.Receiver.Auth.TokenFile != want {
			t.Errorf("receiver.auth.token_file = %q, want %q", cfg.Receiver.Auth.TokenFile, want)
		}
		tls := cfg.Receiver.GRPC.TLS
		if tls.CertFile != filepath.Join(dir, "tls.crt") || tls.KeyFile != filepath.Join(dir, "tls.key") || tls.ClientCAFile != "/abs/ca.crt" {
			t.Errorf("receiver.grpc.tls = %+v, want the relative paths resolved, the absolute one kept", tls)
		}
	})
	t.Run("absolute price table is kept", func(t *testing.T) {
		abs := filepath.Join(dir, "elsewhere", "t.json")
		cfg, err := Load(write("abs.yaml", fmt.Sprintf("pricing:\n  table: %q\n", abs)))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Pricing.Table != abs {
			t.Errorf("pricing.table = %q, want %q", cfg.Pricing.Table, abs)
		}
	})
	t.Run("file too large", func(t *testing.T) {
		path := write("big.yaml", "# "+strings.Repeat("x", maxFileSize)+"\n")
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("Load(big) = %v, want a size error", err)
		}
	})
}

func TestSlogLevel(t *testing.T) {
	tests := []struct {
		level string
		want  slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
		{"", slog.LevelInfo},
	}
	for _, tc := range tests {
		t.Run(tc.level, func(t *testing.T) {
			if got := (Config{Log: Log{Level: tc.level}}).SlogLevel(); got != tc.want {
				t.Errorf("SlogLevel(%q) = %v, want %v", tc.level, got, tc.want)
			}
		})
	}
}

// TestOTLPTimeoutFollowsInterval: a timeout the file leaves out is the
// smaller of 10s and the interval; one the file sets is checked as written.
func TestOTLPTimeoutFollowsInterval(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want time.Duration // 0: Parse must fail with wantErr
		err  string
	}{
		{name: "short interval alone", doc: "exporters:\n  otlp:\n    interval: 1s\n", want: time.Second},
		{name: "sub-second interval alone", doc: "exporters:\n  otlp:\n    interval: 250ms\n", want: 250 * time.Millisecond},
		{name: "long interval keeps 10s", doc: "exporters:\n  otlp:\n    interval: 5m\n", want: 10 * time.Second},
		{name: "empty timeout follows", doc: "exporters:\n  otlp:\n    interval: 2s\n    timeout:\n", want: 2 * time.Second},
		{name: "explicit shorter timeout kept", doc: "exporters:\n  otlp:\n    interval: 2s\n    timeout: 500ms\n", want: 500 * time.Millisecond},
		{name: "explicit timeout over interval refused", doc: "exporters:\n  otlp:\n    interval: 1s\n    timeout: 10s\n",
			err: "line 4: exporters.otlp.timeout must be <= exporters.otlp.interval (1s), got 10s"},
		{name: "explicit timeout over default interval refused", doc: "exporters:\n  otlp:\n    timeout: 31s\n",
			err: "line 3: exporters.otlp.timeout must be <= exporters.otlp.interval (30s), got 31s"},
		{name: "bad interval reported alone", doc: "exporters:\n  otlp:\n    interval: 0s\n",
			err: "line 3: exporters.otlp.interval must be > 0, got 0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.doc))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Parse error = %v, want %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.Exporters.OTLP.Timeout; got != tc.want {
				t.Errorf("exporters.otlp.timeout = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMemoryLimitDefault(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name   string
		cgroup func() (uint64, error)
		want   int
	}{
		{"no limit", func() (uint64, error) { return 0, memlimit.ErrNoLimit }, DefaultMemoryLimitMiB},
		{"not in a cgroup", func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, DefaultMemoryLimitMiB},
		{"unreadable", func() (uint64, error) { return 0, os.ErrPermission }, DefaultMemoryLimitMiB},
		{"zero", func() (uint64, error) { return 0, nil }, DefaultMemoryLimitMiB},
		{"64Mi pod", func() (uint64, error) { return 64 * mib, nil }, 57},
		{"128Mi pod", func() (uint64, error) { return 128 * mib, nil }, 115},
		{"1Gi pod", func() (uint64, error) { return 1024 * mib, nil }, 921},
		{"tiny limit floors at 16", func() (uint64, error) { return 4 * mib, nil }, 16},
		{"huge limit caps", func() (uint64, error) { return 1 << 62, nil }, 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := memoryLimitMiB(tc.cgroup); got != tc.want {
				t.Errorf("memoryLimitMiB = %d, want %d", got, tc.want)
			}
		})
	}
	if got := (Memory{LimitMiB: 128}).LimitBytes(); got != 128*mib {
		t.Errorf("LimitBytes = %d, want %d", got, 128*mib)
	}
	for _, tc := range []struct{ limit, want int64 }{{16, 12 * mib}, {64, 48 * mib}, {96, 72 * mib}, {128, 96 * mib}, {256, 224 * mib}, {1024, 992 * mib}} {
		if got := (Memory{LimitMiB: int(tc.limit)}).RuntimeLimitBytes(); got != tc.want {
			t.Errorf("RuntimeLimitBytes at %d MiB = %d MiB, want %d MiB", tc.limit, got/mib, tc.want/mib)
		}
	}
	// The machine's own default is one of the two kinds.
	if got := Default().Memory.LimitMiB; got < 16 || got > 1<<20 {
		t.Errorf("Default().Memory.LimitMiB = %d, out of range", got)
	}
}

func TestInflightSizedFromMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name          string
		grpc          GRPC
		limitMiB      int
		wantRPCs, mib int
	}{
		{"default limit", GRPC{MaxRecvMsgSizeMiB: 4}, 256, 28, 56},
		{"128 MiB", GRPC{MaxRecvMsgSizeMiB: 4}, 128, 12, 24},
		{"64 MiB: half for requests", GRPC{MaxRecvMsgSizeMiB: 4}, 64, 4, 8},
		{"tiny limit keeps a floor", GRPC{MaxRecvMsgSizeMiB: 16}, 32, 4, 32},
		{"huge limit keeps a ceiling", GRPC{MaxRecvMsgSizeMiB: 1}, 1 << 20, 1024, (1<<20 - 32) / 4},
		{"explicit values win", GRPC{MaxRecvMsgSizeMiB: 4, MaxInflightRPCs: 7, MaxInflightMiB: 9}, 256, 7, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rpcs, mib := tc.grpc.Inflight(tc.limitMiB)
			if rpcs != tc.wantRPCs || mib != tc.mib {
				t.Errorf("Inflight(%d) = %d rpcs, %d MiB; want %d, %d", tc.limitMiB, rpcs, mib, tc.wantRPCs, tc.mib)
			}
		})
	}
}

// TestInflightLeavesRoomForStorage: with storage.directory set, Pebble's
// block cache (sized from memory.limit_mib) and memtables come out of
// the memory the in-flight bounds are sized from.
func TestInflightLeavesRoomForStorage(t *testing.T) {
	for _, tc := range []struct {
		limitMiB                           int
		storage                            bool
		memTableMiB, storageMiB, rpcs, mib int
	}{
		{128, false, 12, 0, 12, 24},
		{128, true, 12, 36, 7, 15},
		{256, true, 20, 56, 21, 42},
		{64, true, 8, 26, 4, 8},
		{1024, true, 20, 64, 116, 232},
	} {
		t.Run(fmt.Sprintf("limit=%d/storage=%v", tc.limitMiB, tc.storage), func(t *testing.T) {
			c := Default()
			c.Memory.LimitMiB = tc.limitMiB
			if tc.storage {
				c.Storage.Directory = "/var/lib/agentmeter"
			}
			if got := c.StorageMemTableMiB(); got != tc.memTableMiB {
				t.Errorf("StorageMemTableMiB = %d, want %d", got, tc.memTableMiB)
			}
			if got := c.StorageMemoryMiB(); got != tc.storageMiB {
				t.Errorf("StorageMemoryMiB = %d, want %d", got, tc.storageMiB)
			}
			if rpcs, mib := c.Inflight(); rpcs != tc.rpcs || mib != tc.mib {
				t.Errorf("Inflight = %d rpcs, %d MiB; want %d, %d", rpcs, mib, tc.rpcs, tc.mib)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	for _, tc := range []struct {
		in, path string
		ok       bool
	}{
		{"unix:///run/agentmeter/agentmeter.sock", "/run/agentmeter/agentmeter.sock", true},
		{"unix:/run/a.sock", "/run/a.sock", true},
		{"unix:a.sock", "a.sock", true},
		{"localhost:4320", "", false},
	} {
		if path, ok := SocketPath(tc.in); path != tc.path || ok != tc.ok {
			t.Errorf("SocketPath(%q) = %q, %v; want %q, %v", tc.in, path, ok, tc.path, tc.ok)
		}
	}
}

func TestInflightCheckedAgainstMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, doc, err string
	}{
		{"defaults fit", "memory:\n  limit_mib: 64\n", ""},
		{"auto at the floor is not checked", "memory:\n  limit_mib: 16\n", ""},
		{"explicit calls that fit", "receiver:\n  grpc:\n    max_inflight_rpcs: 4\nmemory:\n  limit_mib: 64\n", ""},
		{"explicit bytes over the limit", "receiver:\n  grpc:\n    max_inflight_mib: 64\nmemory:\n  limit_mib: 128\n",
			"line 3: receiver.grpc.max_inflight_mib must fit in the 96 MiB that memory.limit_mib (128) leaves for requests: max_inflight_rpcs × max_recv_msg_size_mib + max_inflight_mib = 12 × 4 + 64 = 112 MiB"},
		{"larger messages count", "receiver:\n  grpc:\n    max_recv_msg_size_mib: 16\n    max_inflight_rpcs: 12\nmemory:\n  limit_mib: 256\n",
			"line 4: receiver.grpc.max_inflight_rpcs must fit in the 224 MiB that memory.limit_mib (256) leaves for requests: max_inflight_rpcs × max_recv_msg_size_mib + max_inflight_mib = 12 × 16 + 56 = 248 MiB"},
		{"storage counts", "receiver:\n  grpc:\n    max_inflight_rpcs: 14\nmemory:\n  limit_mib: 128\nstorage:\n  directory: /var/lib/agentmeter\n",
			"line 3: receiver.grpc.max_inflight_rpcs must fit in the 60 MiB that memory.limit_mib (128 less storage's 36 MiB) leaves for requests: max_inflight_rpcs × max_recv_msg_size_mib + max_inflight_mib = 14 × 4 + 15 = 71 MiB"},
		{"defaults fit with storage", "memory:\n  limit_mib: 128\nstorage:\n  directory: /var/lib/agentmeter\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if tc.err == "" && err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tc.err != "" && (err == nil || err.Error() != tc.err) {
				t.Fatalf("Parse error = %v, want %s", err, tc.err)
			}
		})
	}
}
