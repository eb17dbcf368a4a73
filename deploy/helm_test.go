package deploy

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/agentmeter/agentmeter/internal/testtool"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden renders of testdata/helm from the charts")

const (
	chartDir     = "helm/agentmeter"
	exampleChart = "helm/example-agent"
	goldenDir    = "testdata/helm"
	crdDir       = "testdata/crds"
	helmInstall  = "go install helm.sh/helm/v3/cmd/helm@v3.22.0"
	kvInstall    = "go install sigs.k8s.io/kubectl-validate@v0.0.4"
	// kvSchemas is the newest Kubernetes version kubectl-validate v0.0.4
	// carries schemas of; renders for newer releases are checked against it.
	kvSchemas = "1.30"
)

// kubeVersions are the Kubernetes releases the chart is rendered for: the
// oldest it supports (native sidecars on by default) and the current one.
var kubeVersions = []string{"1.29.0", "1.37.0"}

// helmTemplate renders the example agent chart (which includes agentmeter's
// named templates) for kubeVersion with extra helm arguments.
func helmTemplate(t *testing.T, helm, kubeVersion string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", "agent", exampleChart,
		"--namespace", "agents", "--kube-version", kubeVersion}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm template %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func mustTemplate(t *testing.T, helm string, args ...string) string {
	t.Helper()
	out, err := helmTemplate(t, helm, kubeVersions[len(kubeVersions)-1], args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// objects splits a render into its documents, each decoded into a map.
func objects(t *testing.T, render string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(render))
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("parse render: %v", err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
}

// find returns the one object of kind whose name ends in suffix.
func find(t *testing.T, objs []map[string]any, kind, suffix string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, o := range objs {
		name, _ := o["metadata"].(map[string]any)["name"].(string)
		if o["kind"] == kind && strings.HasSuffix(name, suffix) {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("render: %d %s objects named *%s, want 1", len(found), kind, suffix)
	}
	return found[0]
}

// decodeInto re-encodes o and decodes it into v (a typed view of it).
func decodeInto(t *testing.T, o any, v any) {
	t.Helper()
	b, err := yaml.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestHelmLint(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	for _, chart := range []string{chartDir, exampleChart} {
		run(t, helm, "lint", "--strict", chart)
	}
}

// TestHelmTemplateGolden compares the renders with the files of
// testdata/helm; `go test ./deploy/ -run TestHelmTemplateGolden -update`
// rewrites them after an intended change (review the diff).
func TestHelmTemplateGolden(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	for _, kv := range kubeVersions {
		got, err := helmTemplate(t, helm, kv)
		if err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join(goldenDir, "example-agent-"+kv[:strings.LastIndex(kv, ".")]+".yaml")
		if *update {
			if err := os.MkdirAll(goldenDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if got != string(want) {
			t.Errorf("helm template --kube-version %s differs from %s (run `go test ./deploy/ -run TestHelmTemplateGolden -update` and review the diff):\n%s",
				kv, golden, firstDiff(string(want), got))
		}
	}
}

// firstDiff shows the first differing line of two texts with its number.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  want %q\n  got  %q", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

// TestHelmRefusesOldKubernetes: native sidecars need 1.29.
func TestHelmRefusesOldKubernetes(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	_, err := helmTemplate(t, helm, "1.28.0")
	if err == nil || !strings.Contains(err.Error(), "kubeVersion") {
		t.Fatalf("helm template --kube-version 1.28.0: err = %v, want a kubeVersion refusal", err)
	}
}

// TestHelmKubectlValidate validates every rendered object offline, the
// PodMonitor and PrometheusRule against the prometheus-operator CRDs of
// testdata/crds.
func TestHelmKubectlValidate(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	kv := testtool.Need(t, "kubectl-validate", kvInstall)
	for _, version := range kubeVersions {
		render, err := helmTemplate(t, helm, version, "--set-string", "agentmeter.cpu.limit=1",
			"--set", "agentmeter.unixSocket.enabled=true", "--set", "agentmeter.auth.tokenSecret=agentmeter-token")
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, o := range objects(t, render) {
			kinds[o["kind"].(string)]++
		}
		for _, k := range []string{"Deployment", "ConfigMap", "PodMonitor", "PrometheusRule"} {
			if kinds[k] == 0 {
				t.Errorf("--kube-version %s: no %s rendered (%v)", version, k, kinds)
			}
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "render.yaml"), []byte(render), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, kv, "--version", kvSchemas, "--local-crds", crdDir, dir+"/")
	}
}

// TestHelmKubectlValidateCatchesErrors shows that the validation above can
// fail: a PodMonitor with a misspelt field is refused by the vendored CRD.
func TestHelmKubectlValidateCatchesErrors(t *testing.T) {
	t.Parallel()
	kv := testtool.Need(t, "kubectl-validate", kvInstall)
	dir := t.TempDir()
	bad := `apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: bad}
spec:
  selector: {matchLabels: {a: b}}
  podMetricsEndpoints: [{port: metrics, intervall: 30s}]
`
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kv, "--version", kvSchemas, "--local-crds", crdDir, dir+"/").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "intervall") {
		t.Fatalf("kubectl-validate accepted a PodMonitor with an unknown field: err %v\n%s", err, out)
	}
}

// TestHelmSidecar checks what the schemas cannot: the sidecar is wired the
// way agentmeter needs, in the Pod of the agent chart that includes it.
func TestHelmSidecar(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	for _, tc := range []struct {
		name     string
		args     []string
		memory   string
		limitMiB int
	}{
		{"defaults", nil, "128Mi", 115},
		{"memory follows the limit", []string{"--set", "agentmeter.memoryMiB=512", "--set", "agentmeter.memoryLimitPercent=80"}, "512Mi", 409},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := objects(t, mustTemplate(t, helm, tc.args...))
			var dep struct {
				Spec struct {
					Template struct {
						Metadata struct {
							Labels      map[string]string `yaml:"labels"`
							Annotations map[string]string `yaml:"annotations"`
						} `yaml:"metadata"`
						Spec struct {
							InitContainers []k8sCont   `yaml:"initContainers"`
							Volumes        []k8sVolume `yaml:"volumes"`
						} `yaml:"spec"`
					} `yaml:"template"`
				} `yaml:"spec"`
			}
			decodeInto(t, find(t, objs, "Deployment", "-openhands"), &dep)
			pod := dep.Spec.Template
			i := slices.IndexFunc(pod.Spec.InitContainers, func(c k8sCont) bool { return c.Name == "agentmeter" })
			if i < 0 {
				t.Fatal("no init container agentmeter")
			}
			c := pod.Spec.InitContainers[i]
			if c.RestartPolicy != "Always" {
				t.Errorf("restartPolicy = %q, want Always (a native sidecar)", c.RestartPolicy)
			}
			for _, p := range []struct {
				what  string
				probe *k8sProbe
				path  string
			}{{"startupProbe", c.StartupProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != "metrics" {
					t.Errorf("%s: want httpGet %s on port metrics", p.what, p.path)
				}
			}
			if !slices.Contains(c.Ports, k8sPort{Name: "metrics", ContainerPort: 9464}) {
				t.Errorf("no port named metrics on 9464: %+v", c.Ports)
			}

			if got := c.Resources.Limits["memory"]; got != tc.memory {
				t.Errorf("limits.memory = %q, want %s", got, tc.memory)
			}
			if got := c.Resources.Requests["memory"]; got != tc.memory {
				t.Errorf("requests.memory = %q, want %s", got, tc.memory)
			}
			env := map[string]string{}
			fieldRefs := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
					fieldRefs[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
				if e.Name == "OTEL_RESOURCE_ATTRIBUTES" {
					// Downward API variables must come before the one that expands them.
					for _, ref := range []struct{ attr, env, path string }{
						{"k8s.pod.name", "AGENTMETER_POD_NAME", "metadata.name"},
						{"k8s.namespace.name", "AGENTMETER_POD_NAMESPACE", "metadata.namespace"},
						{"k8s.pod.uid", "AGENTMETER_POD_UID", "metadata.uid"},
						{"k8s.node.name", "AGENTMETER_NODE_NAME", "spec.nodeName"},
					} {
						if fieldRefs[ref.env] != ref.path {
							t.Errorf("env %s: want a fieldRef to %s before OTEL_RESOURCE_ATTRIBUTES", ref.env, ref.path)
						}
						if !strings.Contains(e.Value, ref.attr+"=$("+ref.env+")") {
							t.Errorf("OTEL_RESOURCE_ATTRIBUTES = %q: no %s=$(%s)", e.Value, ref.attr, ref.env)
						}
					}
				}
				env[e.Name] = e.Value
			}
			// memory.limit_mib follows the limit; no GOMEMLIMIT overrides it.
			if got, ok := env["GOMEMLIMIT"]; ok {
				t.Errorf("GOMEMLIMIT = %q: it would override memory.limit_mib for the Go runtime", got)
			}
			var cfg struct {
				Memory struct {
					LimitMiB int `yaml:"limit_mib"`
				} `yaml:"memory"`
				Storage struct {
					Directory string `yaml:"directory"`
				} `yaml:"storage"`
			}
			cmText, _ := find(t, objs, "ConfigMap", "-agentmeter")["data"].(map[string]any)["config.yaml"].(string)
			if err := yaml.Unmarshal([]byte(cmText), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.Memory.LimitMiB != tc.limitMiB {
				t.Errorf("memory.limit_mib = %d, want %d", cfg.Memory.LimitMiB, tc.limitMiB)
			}
			if cfg.Storage.Directory == "" || cfg.Storage.Directory != mountPathOf(c, "agentmeter-state") {
				t.Errorf("storage.directory = %q, want the state emptyDir's mount (%q)", cfg.Storage.Directory, mountPathOf(c, "agentmeter-state"))
			}
			if !strings.Contains(env["OTEL_RESOURCE_ATTRIBUTES"], "k8s.deployment.name=openhands-agent") {
				t.Errorf("OTEL_RESOURCE_ATTRIBUTES = %q: the example's resourceAttributes are missing", env["OTEL_RESOURCE_ATTRIBUTES"])
			}

			// The restricted Pod Security Standard, on the container itself.
			sc := c.SecurityContext
			isTrue := func(b *bool) bool { return b != nil && *b }
			switch {
			case sc == nil:
				t.Fatal("no securityContext")
			case !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser != 65532:
				t.Error("want runAsNonRoot with runAsUser 65532")
			case !isTrue(sc.ReadOnlyRootFilesystem):
				t.Error("readOnlyRootFilesystem is not true")
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation, isTrue(sc.Privileged):
				t.Error("privilege escalation or privileged is not false")
			case !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}):
				t.Errorf("capabilities.drop = %q, want [ALL]", sc.Capabilities.Drop)
			case sc.SeccompProfile.Type != "RuntimeDefault":
				t.Errorf("seccompProfile = %q, want RuntimeDefault", sc.SeccompProfile.Type)
			}

			// Volumes: the config from the rendered ConfigMap, the state on an emptyDir.
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			cm := find(t, objs, "ConfigMap", "-agentmeter")
			for _, v := range pod.Spec.Volumes {
				switch v.Name {
				case "agentmeter-config":
					if v.ConfigMap == nil || v.ConfigMap.Name != cm["metadata"].(map[string]any)["name"] {
						t.Errorf("volume agentmeter-config: want the rendered ConfigMap")
					}
					if mounts[v.Name] != "/etc/agentmeter" {
						t.Errorf("agentmeter-config mounted at %q, want /etc/agentmeter", mounts[v.Name])
					}
				case "agentmeter-state":
					if v.EmptyDir == nil || v.EmptyDir.SizeLimit == "" {
						t.Error("volume agentmeter-state: want an emptyDir with a sizeLimit")
					}
					if mounts[v.Name] == "" {
						t.Error("agentmeter-state is not mounted")
					}
				}
			}
			if len(mounts) != 2 {
				t.Errorf("mounts = %v, want agentmeter-config and agentmeter-state", mounts)
			}
			if !slices.Equal(c.Args, []string{"--config", "/etc/agentmeter/config.yaml"}) {
				t.Errorf("args = %q", c.Args)
			}
			if pod.Metadata.Annotations["checksum/agentmeter-config"] == "" {
				t.Error("no checksum/agentmeter-config annotation: a config change would not roll the Pods")
			}

			// The PodMonitor selects this Pod, scrapes port metrics as job
			// agentmeter, and carries the release label.
			var pm struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec struct {
					Selector struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"selector"`
					Endpoints []struct {
						Port        string `yaml:"port"`
						Relabelings []struct {
							TargetLabel string `yaml:"targetLabel"`
							Replacement string `yaml:"replacement"`
						} `yaml:"relabelings"`
					} `yaml:"podMetricsEndpoints"`
				} `yaml:"spec"`
			}
			decodeInto(t, find(t, objs, "PodMonitor", "-agentmeter"), &pm)
			if len(pm.Spec.Selector.MatchLabels) == 0 {
				t.Error("PodMonitor: empty selector")
			}
			for k, v := range pm.Spec.Selector.MatchLabels {
				if pod.Metadata.Labels[k] != v {
					t.Errorf("PodMonitor selects %s=%s, which the agent Pod does not carry", k, v)
				}
			}
			if len(pm.Spec.Endpoints) != 1 || pm.Spec.Endpoints[0].Port != "metrics" ||
				!slices.ContainsFunc(pm.Spec.Endpoints[0].Relabelings, func(r struct {
					TargetLabel string `yaml:"targetLabel"`
					Replacement string `yaml:"replacement"`
				}) bool {
					return r.TargetLabel == "job" && r.Replacement == "agentmeter"
				}) {
				t.Errorf("PodMonitor endpoints = %+v, want port metrics with job=agentmeter", pm.Spec.Endpoints)
			}
			for _, kind := range []string{"PodMonitor", "PrometheusRule"} {
				labels := find(t, objs, kind, "-agentmeter")["metadata"].(map[string]any)["labels"].(map[string]any)
				if labels["release"] != "kube-prometheus-stack" {
					t.Errorf("%s: release label = %v, want kube-prometheus-stack", kind, labels["release"])
				}
			}
		})
	}
}

// TestHelmRulesOneSource: the PrometheusRule carries exactly the rules that
// promtool checks and tests (deploy/prometheus/agentmeter-rules.yaml).
func TestHelmRulesOneSource(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	rule := find(t, objects(t, mustTemplate(t, helm)), "PrometheusRule", "-agentmeter")
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rule["spec"], want) {
		t.Errorf("PrometheusRule spec differs from %s", rulesFile)
	}
}

// TestHelmConfigValidates runs `collector validate` on the config.yaml of
// the rendered ConfigMap, with the defaults and with typical overrides.
func TestHelmConfigValidates(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	bin := filepath.Join(t.TempDir(), "collector")
	run(t, "go", "build", "-o", bin, "../cmd/collector")
	// The token file and the socket directory the chart mounts, made here.
	root := t.TempDir()
	tokenDir, socketDir := filepath.Join(root, "auth"), filepath.Join(root, "run")
	for _, d := range []string{tokenDir, socketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mounted := strings.NewReplacer("/etc/agentmeter-auth", tokenDir, "/var/run/agentmeter", socketDir)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"unix socket and token", []string{"--set", "agentmeter.unixSocket.enabled=true", "--set", "agentmeter.auth.tokenSecret=agentmeter-token"}},
		{"otlp and ports", []string{"--set", "agentmeter.ingestPort=5000", "--set", "agentmeter.metricsPort=9000",
			"--set", "agentmeter.config.exporters.otlp.enabled=true", "--set", "agentmeter.config.exporters.otlp.endpoint=otel-gateway:4317"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := find(t, objects(t, mustTemplate(t, helm, tc.args...)), "ConfigMap", "-agentmeter")
			text, _ := cm["data"].(map[string]any)["config.yaml"].(string)
			text = mounted.Replace(text)
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, bin, "validate", "--config", path)
		})
	}
	// And the check can fail: a key the binary does not know.
	cm := find(t, objects(t, mustTemplate(t, helm, "--set", "agentmeter.config.receiver.no_such_key=1")), "ConfigMap", "-agentmeter")
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm["data"].(map[string]any)["config.yaml"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "validate", "--config", path).CombinedOutput(); err == nil || !strings.Contains(string(out), "no_such_key") {
		t.Errorf("collector validate accepted receiver.no_such_key: err %v\n%s", err, out)
	}
}

// TestHelmValuesSchema feeds bad values: values.schema.json refuses each
// with a message naming the value's path.
func TestHelmValuesSchema(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	for _, tc := range []struct {
		name   string
		values string // YAML under the agentmeter key
		want   []string
	}{
		{"unknown key", "memoryMib: 128", []string{"memoryMib"}},
		{"memory as a string", "memoryMiB: 128Mi", []string{"/memoryMiB", "integer"}},
		{"memory too small", "memoryMiB: 16", []string{"/memoryMiB", "32"}},
		{"memory share too high", "memoryLimitPercent: 100", []string{"/memoryLimitPercent", "95"}},
		{"port out of range", "metricsPort: 70000", []string{"/metricsPort", "maximum"}},
		{"port zero", "ingestPort: 0", []string{"/ingestPort"}},
		{"bad pull policy", "image: {pullPolicy: Sometimes}", []string{"/image/pullPolicy"}},
		{"bad digest", "image: {digest: sha256:abc}", []string{"/image/digest"}},
		{"tag with a space", "image: {tag: 'v 1'}", []string{"/image/tag"}},
		{"cpu request not a quantity", "cpu: {request: lots}", []string{"/cpu/request"}},
		{"relative state path", "state: {mountPath: var/lib}", []string{"/state/mountPath"}},
		{"state over the config", "state: {mountPath: /etc/agentmeter/state}", []string{"/state/mountPath"}},
		{"state size", "state: {sizeLimit: 1TB}", []string{"/state/sizeLimit"}},
		{"label value a number", "dashboards: {labels: {grafana_dashboard: 1}}", []string{"/dashboards/labels/grafana_dashboard", "string"}},
		{"podMonitor interval", "podMonitor: {interval: 30}", []string{"/podMonitor/interval"}},
		{"probe period zero", "probes: {startup: {periodSeconds: 0}}", []string{"/probes/startup/periodSeconds"}},
		{"resource attribute with a comma", "resourceAttributes: {team: 'a,b'}", []string{"/resourceAttributes/team"}},
		{"extraEnv overriding GOMEMLIMIT", "extraEnv: [{name: GOMEMLIMIT, value: 1GiB}]", []string{"/extraEnv/0/name"}},
		{"config not a map", "config: [1]", []string{"/config", "object"}},
		{"socket dir relative", "unixSocket: {enabled: true, dir: run/agentmeter}", []string{"/unixSocket/dir"}},
		{"socket flag a string", "unixSocket: {enabled: 'yes'}", []string{"/unixSocket/enabled", "boolean"}},
		{"secret name not a DNS name", "auth: {tokenSecret: My_Secret}", []string{"/auth/tokenSecret"}},
		{"config section not a map", "config: {receiver: 1}", []string{"/config/receiver", "object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var sub map[string]any
			if err := yaml.Unmarshal([]byte(tc.values), &sub); err != nil {
				t.Fatal(err)
			}
			b, err := yaml.Marshal(map[string]any{"agentmeter": sub})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = helmTemplate(t, helm, kubeVersions[len(kubeVersions)-1], "-f", path)
			if err == nil {
				t.Fatalf("values %s: accepted", tc.values)
			}
			msg := err.Error()
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("values %s: refused, but not by the schema:\n%s", tc.values, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("values %s: message does not name %q:\n%s", tc.values, w, msg)
				}
			}
		})
	}
}

// TestHelmDashboards: one ConfigMap per dashboard of deploy/grafana, with
// the Grafana sidecar's label and the file's JSON unchanged.
func TestHelmDashboards(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	objs := objects(t, mustTemplate(t, helm))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		cm := find(t, objs, "ConfigMap", "-dashboard-"+name)
		if l := cm["metadata"].(map[string]any)["labels"].(map[string]any)["grafana_dashboard"]; l != "1" {
			t.Errorf("%s: grafana_dashboard label = %v, want \"1\"", name, l)
		}
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := cm["data"].(map[string]any)[filepath.Base(f)].(string)
		if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
			t.Errorf("%s: the ConfigMap's JSON differs from %s", name, f)
		}
	}
	// And none when disabled.
	for _, o := range objects(t, mustTemplate(t, helm, "--set", "agentmeter.dashboards.enabled=false")) {
		if strings.Contains(o["metadata"].(map[string]any)["name"].(string), "-dashboard-") {
			t.Errorf("dashboards.enabled=false still renders %v", o["metadata"])
		}
	}
}

// TestHelmUnixSocketAndToken: with unixSocket and auth.tokenSecret, the
// sidecar listens on the socket of a volume the agent mounts too, reads the
// token from the Secret, and the agent gets both (agentmeter.agentEnv).
func TestHelmUnixSocketAndToken(t *testing.T) {
	t.Parallel()
	helm := testtool.Need(t, "helm", helmInstall)
	objs := objects(t, mustTemplate(t, helm, "--set", "agentmeter.unixSocket.enabled=true", "--set", "agentmeter.auth.tokenSecret=agentmeter-token"))
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					SecurityContext struct {
						SupplementalGroups []int `yaml:"supplementalGroups"`
					} `yaml:"securityContext"`
					InitContainers []k8sCont   `yaml:"initContainers"`
					Containers     []k8sCont   `yaml:"containers"`
					Volumes        []k8sVolume `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	decodeInto(t, find(t, objs, "Deployment", "-openhands"), &dep)
	pod := dep.Spec.Template.Spec
	var cfg struct {
		Receiver struct {
			GRPC struct {
				Endpoint string `yaml:"endpoint"`
			} `yaml:"grpc"`
			Auth struct {
				TokenFile string `yaml:"token_file"`
			} `yaml:"auth"`
		} `yaml:"receiver"`
	}
	text, _ := find(t, objs, "ConfigMap", "-agentmeter")["data"].(map[string]any)["config.yaml"].(string)
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatal(err)
	}
	socket := strings.TrimPrefix(cfg.Receiver.GRPC.Endpoint, "unix://")
	if socket == cfg.Receiver.GRPC.Endpoint {
		t.Fatalf("receiver.grpc.endpoint = %q, want unix://", cfg.Receiver.GRPC.Endpoint)
	}
	mountOf := func(c k8sCont, dir string) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == dir {
				return m.Name
			}
		}
		return ""
	}
	sidecar, agent := pod.InitContainers[0], pod.Containers[0]
	vol := mountOf(sidecar, filepath.Dir(socket))
	if vol == "" || mountOf(agent, filepath.Dir(socket)) != vol {
		t.Errorf("socket directory %s: sidecar mounts %q, agent %q: want the same volume", filepath.Dir(socket), vol, mountOf(agent, filepath.Dir(socket)))
	}
	if !slices.Contains(pod.SecurityContext.SupplementalGroups, 65532) {
		t.Errorf("supplementalGroups = %v: the agent cannot open the 0660 socket of group 65532", pod.SecurityContext.SupplementalGroups)
	}
	if tokVol := mountOf(sidecar, filepath.Dir(cfg.Receiver.Auth.TokenFile)); tokVol == "" {
		t.Errorf("token_file %q is on no volume of the sidecar", cfg.Receiver.Auth.TokenFile)
	} else {
		i := slices.IndexFunc(pod.Volumes, func(v k8sVolume) bool { return v.Name == tokVol })
		if i < 0 || pod.Volumes[i].Secret == nil || pod.Volumes[i].Secret.SecretName != "agentmeter-token" {
			t.Errorf("volume %s: want the Secret agentmeter-token", tokVol)
		}
	}
	env := map[string]string{}
	for _, e := range agent.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			env[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	if env["AGENTMETER_TARGET"] != cfg.Receiver.GRPC.Endpoint || env["AGENTMETER_TOKEN"] != "secret:agentmeter-token/token" {
		t.Errorf("agent env = %v, want AGENTMETER_TARGET %s and AGENTMETER_TOKEN from the Secret", env, cfg.Receiver.GRPC.Endpoint)
	}
	for _, p := range sidecar.Ports {
		if p.Name == "ingest" {
			t.Error("an ingest port is declared although ingest is on the socket")
		}
	}
}

// mountPathOf is where container c mounts the volume named name ("" = nowhere).
func mountPathOf(c k8sCont, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}
