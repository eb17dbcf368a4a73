// Package deploy holds no Go code: its tests check the deployment files
// beside them (Prometheus rules, Kubernetes manifests) with the real tools,
// and keep the rules' metric names equal to the README's catalogue.
package deploy

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/internal/testtool"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "prometheus/agentmeter-rules.yaml"
	rulesTestFile = "prometheus/agentmeter-rules.test.yaml"
	manifestDir   = "kubernetes"
	podManifest   = "kubernetes/agent-pod.yaml"
	readme        = "../README.md"
)

// run runs a tool and fails the test with its output when it exits non-zero.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out)
}

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	promtool := testtool.Need(t, "promtool", "Debian package prometheus")
	run(t, promtool, "check", "rules", rulesFile)
}

func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	promtool := testtool.Need(t, "promtool", "Debian package prometheus")
	run(t, promtool, "test", "rules", rulesTestFile)
}

// TestKubectlValidate checks the manifests against the Kubernetes 1.30 API
// schemas built into kubectl-validate (offline). It checks fields and types,
// not values: TestAgentPod checks what the sidecar needs.
func TestKubectlValidate(t *testing.T) {
	t.Parallel()
	kv := testtool.Need(t, "kubectl-validate", "go install sigs.k8s.io/kubectl-validate@v0.0.4")
	run(t, kv, "--version", "1.30", manifestDir+"/")
}

// rulesDoc is the part of a Prometheus rules file the tests read.
type rulesDoc struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rulesDoc {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc rulesDoc
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", rulesFile, err)
	}
	return doc
}

// catalogue returns the series names of the README's metric catalogue, with
// the _bucket, _sum and _count series of its histograms.
func catalogue(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	begin := strings.Index(text, "<!-- catalogue:begin -->")
	end := strings.Index(text, "<!-- catalogue:end -->")
	if begin < 0 || end < begin {
		t.Fatalf("%s: no <!-- catalogue:begin --> ... <!-- catalogue:end --> block", readme)
	}
	row := regexp.MustCompile("^\\| `([a-z_:][a-z0-9_:]*)` \\| (counter|gauge|histogram) \\|")
	names := map[string]bool{}
	for line := range strings.SplitSeq(text[begin:end], "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		names[m[1]] = true
		if m[2] == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+s] = true
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("%s: only %d series read from the catalogue table: has its format changed?", readme, len(names))
	}
	return names
}

var (
	promqlComment   = regexp.MustCompile(`#[^\n]*`)
	promqlString    = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promqlRange     = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping  = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlToken     = regexp.MustCompile(`[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
	promqlNotSeries = map[string]bool{
		"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"atan2": true,
	}
)

// seriesNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping clauses
// are gone, that are not keywords and not called like a function or an
// aggregation.
func seriesNames(expr string) []string {
	s := promqlComment.ReplaceAllString(expr, " ")
	s = promqlString.ReplaceAllString(s, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRange.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range promqlToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promqlNotSeries[strings.ToLower(tok)] {
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue // a function or an aggregation
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	return names
}

func TestSeriesNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"selector", `up{job="agentmeter"} == 0`, []string{"up"}},
		{"aggregation and range", `sum by (gen_ai_request_model, le) (rate(a_bucket{x="sum(b)"}[5m])) * 60`, []string{"a_bucket"}},
		{"set operators and offset", "(c unless c offset 15m) or increase(d_total[15m]) > 0", []string{"c", "d_total"}},
		{"on and group_left", "a / on (pod) group_left (x) b > bool 0.9", []string{"a", "b"}},
		{"recorded series", "ns:a:rate5m > 1/60 and\n# a comment naming x_total\nns:b:p95 > 6e1", []string{"ns:a:rate5m", "ns:b:p95"}},
		{"aggregation after", "sum(rate(a[1m])) without (otel_scope_name)", []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := seriesNames(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("seriesNames(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}

// TestRulesUseCataloguedSeries fails when a rule selects a series that is
// not in the README's catalogue (a rename would otherwise silence alerts),
// not a standard one, and not recorded by the file itself.
func TestRulesUseCataloguedSeries(t *testing.T) {
	t.Parallel()
	known := catalogue(t)
	known["up"] = true // set by Prometheus for every target
	doc := readRules(t)
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				known[r.Record] = true
			}
		}
	}
	used := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			for _, name := range seriesNames(r.Expr) {
				used++
				if !known[name] {
					t.Errorf("%s: rule %s%s selects %s, which is not in the README's metric catalogue", rulesFile, r.Record, r.Alert, name)
				}
			}
		}
	}
	if used == 0 {
		t.Fatalf("%s: no series found in any rule", rulesFile)
	}
}

// TestAlertsAreActionable checks what promtool does not: every alert waits
// (for), has a severity and says what happened and what to do.
func TestAlertsAreActionable(t *testing.T) {
	t.Parallel()
	alerts := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("alert %s: for = %q, want a duration above 0", r.Alert, r.For)
			}
			if sev := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, sev) {
				t.Errorf("alert %s: severity = %q, want critical, warning or info", r.Alert, sev)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
		}
	}
	if alerts == 0 {
		t.Fatalf("%s: no alerts", rulesFile)
	}
}

// TestEveryAlertTestedBothWays checks that the promtool tests have, for
// every alert, a case where it fires (an alert_rule_test with alerts, or a
// promql_expr_test of its ALERTS series with samples) and one where it does
// not (an alert_rule_test with exp_alerts: []).
func TestEveryAlertTestedBothWays(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests []struct {
			AlertRuleTest []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
			PromQLExprTest []struct {
				Expr       string `yaml:"expr"`
				ExpSamples []any  `yaml:"exp_samples"`
			} `yaml:"promql_expr_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", rulesTestFile, err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	alertName := regexp.MustCompile(`alertname="([^"]+)"`)
	for _, tc := range doc.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
		for _, e := range tc.PromQLExprTest {
			if m := alertName.FindStringSubmatch(e.Expr); m != nil && strings.HasPrefix(e.Expr, "ALERTS") && len(e.ExpSamples) > 0 {
				fires[m[1]] = true
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no case where %s fires", rulesTestFile, r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: no case where %s stays silent (alert_rule_test with exp_alerts: [])", rulesTestFile, r.Alert)
			}
		}
	}
}

// The part of a Pod and a ConfigMap that TestAgentPod reads.
type (
	k8sObject struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name        string            `yaml:"name"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Data map[string]string `yaml:"data"`
		Spec struct {
			TerminationGracePeriodSeconds *int64      `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               *secContext `yaml:"securityContext"`
			InitContainers                []k8sCont   `yaml:"initContainers"`
			Containers                    []k8sCont   `yaml:"containers"`
			Volumes                       []k8sVolume `yaml:"volumes"`
		} `yaml:"spec"`
	}
	secContext struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		Privileged               *bool  `yaml:"privileged"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	}
	k8sPort struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	}
	k8sProbe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
	k8sCont struct {
		Name          string    `yaml:"name"`
		Image         string    `yaml:"image"`
		RestartPolicy string    `yaml:"restartPolicy"`
		Args          []string  `yaml:"args"`
		Ports         []k8sPort `yaml:"ports"`
		Env           []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				FieldRef *struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		StartupProbe   *k8sProbe `yaml:"startupProbe"`
		LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
		ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
		Resources      struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext *secContext `yaml:"securityContext"`
		VolumeMounts    []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
	k8sVolume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	}
)

// TestAgentPod checks what kubectl-validate's schemas cannot: that the
// sidecar in the example Pod is wired the way agentmeter needs, and that its
// ConfigMap's config.yaml passes `collector validate`.
func TestAgentPod(t *testing.T) {
	t.Parallel()
	f, err := os.Open(podManifest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pod *k8sObject
	configMaps := map[string]*k8sObject{}
	dec := yaml.NewDecoder(f)
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("parse %s: %v", podManifest, err)
		}
		switch o.Kind {
		case "Pod":
			pod = &o
		case "ConfigMap":
			configMaps[o.Metadata.Name] = &o
		}
	}
	if pod == nil {
		t.Fatalf("%s: no Pod", podManifest)
	}
	var c *k8sCont
	for i, ic := range pod.Spec.InitContainers {
		if ic.Name == "agentmeter" {
			c = &pod.Spec.InitContainers[i]
			if ic.RestartPolicy != "Always" {
				t.Errorf("init container agentmeter: restartPolicy = %q, want Always (a native sidecar)", ic.RestartPolicy)
			}
		}
	}
	for i, mc := range pod.Spec.Containers {
		if mc.Name == "agentmeter" {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("%s: no container named agentmeter", podManifest)
	}

	if c.Image != "agentmeter:latest" {
		t.Errorf("image = %q, want agentmeter:latest", c.Image)
	}
	if !slices.Contains(c.Ports, k8sPort{Name: "metrics", ContainerPort: 9464}) {
		t.Errorf("no port named metrics on 9464: %+v", c.Ports)
	}
	for _, p := range []struct {
		what  string
		probe *k8sProbe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path ||
			(p.probe.HTTPGet.Port != "metrics" && p.probe.HTTPGet.Port != 9464) {
			t.Errorf("%s: want httpGet %s on port metrics", p.what, p.path)
		}
	}

	// The downward API variables come before the variable that expands them.
	fieldRefs := map[string]string{}
	var resourceAttrs string
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			fieldRefs[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
		if e.Name == "OTEL_RESOURCE_ATTRIBUTES" {
			resourceAttrs = e.Value
			for name, path := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
				if fieldRefs[name] != path {
					t.Errorf("env %s: want a fieldRef to %s before OTEL_RESOURCE_ATTRIBUTES", name, path)
				}
				if !strings.Contains(e.Value, "$("+name+")") {
					t.Errorf("OTEL_RESOURCE_ATTRIBUTES = %q: does not use $(%s)", e.Value, name)
				}
			}
		}
	}
	if resourceAttrs == "" {
		t.Error("no OTEL_RESOURCE_ATTRIBUTES env")
	}

	if got := c.Resources.Limits["memory"]; got != "64Mi" {
		t.Errorf("limits.memory = %q, want 64Mi (memory.limit_mib follows it: 57 MiB)", got)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
		t.Errorf("requests = %v, want cpu and memory", c.Resources.Requests)
	}

	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("agentmeter: no securityContext")
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && pod.Spec.SecurityContext != nil {
		nonRoot = pod.Spec.SecurityContext.RunAsNonRoot
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(nonRoot) {
		t.Error("runAsNonRoot is not true")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("capabilities.drop = %q, want ALL", sc.Capabilities.Drop)
	}

	// The config: the --config file must come from a mounted ConfigMap
	// (or be the image's own), and pass the collector's validation.
	config := "/agentmeter/config.yaml"
	if i := slices.Index(c.Args, "--config"); i >= 0 && i+1 < len(c.Args) {
		config = c.Args[i+1]
	}
	grace := 15 * time.Second // shutdown.grace_period default
	if config != "/agentmeter/config.yaml" {
		text, ok := mountedFile(pod, c, configMaps, config)
		if !ok {
			t.Fatalf("--config %s: not a key of a ConfigMap mounted in the agentmeter container", config)
		}
		dir := t.TempDir()
		path := filepath.Join(dir, filepath.Base(config))
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "go", "run", "../cmd/collector", "validate", "--config", path)
		var cfg struct {
			Shutdown struct {
				GracePeriod string `yaml:"grace_period"`
			} `yaml:"shutdown"`
		}
		if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Shutdown.GracePeriod != "" {
			if grace, err = time.ParseDuration(cfg.Shutdown.GracePeriod); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tg := pod.Spec.TerminationGracePeriodSeconds; tg == nil || time.Duration(*tg)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds must be above shutdown.grace_period (%v)", grace)
	}

	if pod.Metadata.Annotations["prometheus.io/scrape"] != "true" || pod.Metadata.Annotations["prometheus.io/port"] != "9464" {
		t.Errorf("prometheus.io annotations = %v, want scrape true on port 9464", pod.Metadata.Annotations)
	}
}

// mountedFile returns the ConfigMap key behind path in container c.
func mountedFile(pod *k8sObject, c *k8sCont, configMaps map[string]*k8sObject, path string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if filepath.Dir(path) != filepath.Clean(m.MountPath) {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			if cm := configMaps[v.ConfigMap.Name]; cm != nil {
				text, ok := cm.Data[filepath.Base(path)]
				return text, ok
			}
		}
	}
	return "", false
}
