{{/*
agentmeter's named templates. Each takes this chart's context: from an agent
chart that depends on it, pass .Subcharts.agentmeter.
*/}}

{{/* Name of the objects of this release: <release>-agentmeter. */}}
{{- define "agentmeter.fullname" -}}
{{- if contains "agentmeter" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-agentmeter" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of the chart's own objects. */}}
{{- define "agentmeter.labels" -}}
app.kubernetes.io/name: agentmeter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels an agent's Pod template carries so that the PodMonitor finds it. */}}
{{- define "agentmeter.podLabels" -}}
agentmeter/sidecar: {{ .Release.Name | quote }}
{{- end -}}

{{/* Pod template annotations: a config change rolls the Pods. */}}
{{- define "agentmeter.podAnnotations" -}}
checksum/agentmeter-config: {{ include "agentmeter.config" . | sha256sum }}
{{- end -}}

{{/* memory.limit_mib: memoryLimitPercent of the container's memoryMiB. */}}
{{- define "agentmeter.memoryLimitMiB" -}}
{{- div (mul (int .Values.memoryMiB) (int .Values.memoryLimitPercent)) 100 -}}
{{- end -}}

{{/* config.yaml: the chart's settings, with .Values.config merged over them. */}}
{{- define "agentmeter.config" -}}
{{- $base := dict
  "receiver" (dict "grpc" (dict "endpoint" (printf "localhost:%d" (int .Values.ingestPort))))
  "http" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.metricsPort)))
  "log" (dict "format" "json")
  "memory" (dict "limit_mib" (include "agentmeter.memoryLimitMiB" . | int))
-}}
{{- mustMergeOverwrite $base (deepCopy .Values.config) | toYaml -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES: the downward API's k8s.* attributes, then .Values.resourceAttributes. */}}
{{- define "agentmeter.resourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(AGENTMETER_POD_NAME)" "k8s.namespace.name=$(AGENTMETER_POD_NAMESPACE)" "k8s.pod.uid=$(AGENTMETER_POD_UID)" "k8s.node.name=$(AGENTMETER_NODE_NAME)" "k8s.container.name=agentmeter" -}}
{{- range $k, $v := .Values.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $attrs -}}
{{- end -}}

{{/*
The sidecar container, as an item of the Pod's initContainers: a native
sidecar (restartPolicy: Always) that starts before the agent, holds it back
until ingest is ready (startup probe) and stops after it.
*/}}
{{- define "agentmeter.sidecar" -}}
- name: agentmeter
  {{- if .Values.image.digest }}
  image: "{{ .Values.image.repository }}@{{ .Values.image.digest }}"
  {{- else }}
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  {{- end }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args: ["--config", "/etc/agentmeter/config.yaml"]
  ports:
    - name: metrics
      containerPort: {{ .Values.metricsPort }}
    # Informational: ingest listens on localhost, reachable from this Pod only.
    - name: ingest
      containerPort: {{ .Values.ingestPort }}
  env:
    - name: AGENTMETER_POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: AGENTMETER_POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: AGENTMETER_POD_UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: AGENTMETER_NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ include "agentmeter.resourceAttributes" . | quote }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  startupProbe:
    httpGet: {path: /readyz, port: metrics}
    periodSeconds: {{ .Values.probes.startup.periodSeconds }}
    failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  livenessProbe:
    httpGet: {path: /healthz, port: metrics}
    periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
    failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  readinessProbe:
    httpGet: {path: /readyz, port: metrics}
    periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
    failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  resources:
    requests:
      cpu: {{ .Values.cpu.request | quote }}
      memory: {{ .Values.memoryMiB }}Mi
    limits:
      {{- with .Values.cpu.limit }}
      cpu: {{ . | quote }}
      {{- end }}
      memory: {{ .Values.memoryMiB }}Mi
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: agentmeter-config
      mountPath: /etc/agentmeter
      readOnly: true
    - name: agentmeter-state
      mountPath: {{ .Values.state.mountPath }}
{{- end -}}

{{/* The sidecar's volumes, as items of the Pod's volumes. */}}
{{- define "agentmeter.volumes" -}}
- name: agentmeter-config
  configMap:
    name: {{ include "agentmeter.fullname" . }}
- name: agentmeter-state
  emptyDir:
    sizeLimit: {{ .Values.state.sizeLimit }}
{{- end -}}
