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

{{/* The ingest endpoint: a Unix socket on the shared volume, or localhost:ingestPort. */}}
{{- define "agentmeter.endpoint" -}}
{{- if .Values.unixSocket.enabled -}}
unix://{{ .Values.unixSocket.dir }}/ingest.sock
{{- else -}}
localhost:{{ .Values.ingestPort }}
{{- end -}}
{{- end -}}

{{/* Where the sidecar reads the bearer token, when auth.tokenSecret is set. */}}
{{- define "agentmeter.tokenFile" -}}
/etc/agentmeter-auth/{{ .Values.auth.tokenKey }}
{{- end -}}

{{/* config.yaml: the chart's settings, with .Values.config merged over them. */}}
{{- define "agentmeter.config" -}}
{{- $receiver := dict "grpc" (dict "endpoint" (include "agentmeter.endpoint" .)) -}}
{{- if .Values.auth.tokenSecret -}}
{{- $_ := set $receiver "auth" (dict "token_file" (include "agentmeter.tokenFile" .)) -}}
{{- end -}}
{{- $base := dict
  "receiver" $receiver
  "http" (dict "endpoint" (printf "0.0.0.0:%d" (int .Values.metricsPort)))
  "log" (dict "format" "json")
  "memory" (dict "limit_mib" (include "agentmeter.memoryLimitMiB" . | int))
  "storage" (dict "directory" .Values.state.mountPath)
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
    {{- if not .Values.unixSocket.enabled }}
    # Informational: ingest listens on localhost, reachable from this Pod only.
    - name: ingest
      containerPort: {{ .Values.ingestPort }}
    {{- end }}
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
    {{- if .Values.unixSocket.enabled }}
    - name: agentmeter-socket
      mountPath: {{ .Values.unixSocket.dir }}
    {{- end }}
    {{- if .Values.auth.tokenSecret }}
    - name: agentmeter-token
      mountPath: /etc/agentmeter-auth
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes, as items of the Pod's volumes. */}}
{{- define "agentmeter.volumes" -}}
- name: agentmeter-config
  configMap:
    name: {{ include "agentmeter.fullname" . }}
- name: agentmeter-state
  emptyDir:
    sizeLimit: {{ .Values.state.sizeLimit }}
{{- if .Values.unixSocket.enabled }}
- name: agentmeter-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- if .Values.auth.tokenSecret }}
- name: agentmeter-token
  secret:
    secretName: {{ .Values.auth.tokenSecret }}
    items:
      - key: {{ .Values.auth.tokenKey }}
        path: {{ .Values.auth.tokenKey }}
{{- end }}
{{- end -}}

{{/*
The agent container's environment: AGENTMETER_TARGET (the ingest endpoint,
which the Python client and its litellm callback read) and, with
auth.tokenSecret, AGENTMETER_TOKEN from the same Secret.
*/}}
{{- define "agentmeter.agentEnv" -}}
- name: AGENTMETER_TARGET
  value: {{ include "agentmeter.endpoint" . | quote }}
{{- if .Values.auth.tokenSecret }}
- name: AGENTMETER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.tokenSecret }}
      key: {{ .Values.auth.tokenKey }}
{{- end }}
{{- end -}}

{{/*
The agent container's volume mounts: the socket directory with
unixSocket.enabled, else nothing. The socket is mode 0660, group 65532: the
agent's Pod needs supplementalGroups [65532] (or runs as that group).
*/}}
{{- define "agentmeter.agentVolumeMounts" -}}
{{- if .Values.unixSocket.enabled -}}
- name: agentmeter-socket
  mountPath: {{ .Values.unixSocket.dir }}
{{- end -}}
{{- end -}}
