{{/*
Names, labels, addresses and the TOML rendering shared by every template.

Invariants:
- Pods are addressed by their stable DNS names (<pod>.<headless service>.<namespace>.svc.<domain>),
  never by IP: Raft peers, the controllers list, broker advertised addresses, and the proxy's
  advertised endpoint (its Service name, or an external name) all come from these helpers.
- Comet reads one TOML file per role (a ConfigMap); per-pod settings (ids, listen and advertised
  addresses) come from COMET_* environment variables, which win over the file.
*/}}

{{- define "comet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "comet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "comet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels of every resource; call with (dict "root" $ "component" "controller"). */}}
{{- define "comet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "comet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "..." ["set" "broker-a"]). */}}
{{- define "comet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "comet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .set }}
comet.io/broker-set: {{ . }}
{{- end }}
{{- end }}

{{/* "<namespace>.svc.<cluster domain>" */}}
{{- define "comet.svcDomain" -}}
{{- printf "%s.svc.%s" .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "comet.controllerName" -}}
{{- printf "%s-controller" (include "comet.fullname" .) }}
{{- end }}

{{- define "comet.controllerHeadless" -}}
{{- printf "%s-controller-headless" (include "comet.fullname" .) }}
{{- end }}

{{- define "comet.proxyName" -}}
{{- printf "%s-proxy" (include "comet.fullname" .) }}
{{- end }}

{{/* The controllers' stable addresses, one per node (pods are numbered from 1 = node id). */}}
{{- define "comet.controllerAddrs" -}}
{{- $addrs := list }}
{{- $domain := include "comet.svcDomain" . }}
{{- range $i := untilStep 1 (int (add1 .Values.controller.replicas)) 1 }}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s:%d" (include "comet.controllerName" $) $i (include "comet.controllerHeadless" $) $domain (int $.Values.controller.ports.grpc)) }}
{{- end }}
{{- toJson $addrs }}
{{- end }}

{{/* The Raft peers "id=address" of a new cluster. */}}
{{- define "comet.controllerPeers" -}}
{{- $peers := list }}
{{- range $i, $addr := include "comet.controllerAddrs" . | fromJsonArray }}
{{- $peers = append $peers (printf "%d=%s" (add1 $i) $addr) }}
{{- end }}
{{- toJson $peers }}
{{- end }}

{{/* The address clients are given in routes: the value, else the proxy Service's name. */}}
{{- define "comet.advertisedEndpoint" -}}
{{- if .Values.proxy.advertisedEndpoint }}
{{- .Values.proxy.advertisedEndpoint }}
{{- else }}
{{- printf "%s.%s:%d" (include "comet.proxyName" .) (include "comet.svcDomain" .) (int .Values.proxy.service.port) }}
{{- end }}
{{- end }}

{{/*
A role's Comet configuration as TOML. Call with
  (dict "root" $ "what" "controller.config" "user" <role config map> "owned" <map of section.key -> value or nil> "hints" <map section.key -> value name>)
The global `config`, then `user`, then the chart's `owned` keys. A key of `hints` (every owned
key, and the per-pod keys that COMET_* variables set) set by the user fails rendering, naming
the value that controls it.
*/}}
{{- define "comet.toml" -}}
{{- $cfg := mergeOverwrite (deepCopy (default dict .root.Values.config)) (deepCopy (default dict .user)) }}
{{- range $path, $hint := .hints }}
{{- $parts := splitList "." $path }}
{{- $present := false }}
{{- if eq (len $parts) 1 }}
{{- $present = hasKey $cfg (index $parts 0) }}
{{- else if hasKey $cfg (index $parts 0) }}
{{- $section := index $cfg (index $parts 0) }}
{{- $present = and (kindIs "map" $section) (hasKey $section (index $parts 1)) }}
{{- end }}
{{- if $present }}
{{- fail (printf "%s: `%s` is rendered by the chart, remove it: %s" $.what $path $hint) }}
{{- end }}
{{- end }}
{{- range $path, $value := .owned }}
{{- $parts := splitList "." $path }}
{{- if eq (len $parts) 1 }}
{{- $_ := set $cfg $path $value }}
{{- else }}
{{- $section := default dict (index $cfg (index $parts 0)) }}
{{- $_ := set $section (index $parts 1) $value }}
{{- $_ := set $cfg (index $parts 0) $section }}
{{- end }}
{{- end }}
{{- range $k, $v := $cfg }}
{{- if not (kindIs "map" $v) }}
{{ $k }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $cfg }}
{{- if kindIs "map" $v }}

[{{ $k }}]
{{- range $sk, $sv := $v }}
{{ $sk }} = {{ toJson $sv }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Downward-API variables every Comet container gets (what the kubelet fills in). */}}
{{- define "comet.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: COMET_CONFIG
  value: /etc/comet/comet.toml
{{- end }}

{{/* Soft or hard anti-affinity of a component's pods over nodes. */}}
{{- define "comet.antiAffinity" -}}
{{- if eq .mode "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "comet.selectorLabels" .labels | nindent 10 }}
{{- else if eq .mode "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "comet.selectorLabels" .labels | nindent 12 }}
{{- else }}
{{- fail (printf "brokers.antiAffinity must be \"soft\" or \"hard\", not %q" .mode) }}
{{- end }}
{{- end }}

{{/* Volumes and mounts of the config file and a writable /tmp (the root filesystem is read-only). */}}
{{- define "comet.configMounts" -}}
- name: config
  mountPath: /etc/comet
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/comet
{{- end }}

{{/*
The HTTP metrics listener of a pod (metrics.port): the COMET_METRICS_LISTEN variable (on the pod
IP, so Prometheus reaches it; empty turns it off), the container port and the scrape annotations.
*/}}
{{- define "comet.metricsEnv" -}}
- name: COMET_METRICS_LISTEN
  value: {{ if .Values.metrics.port }}"$(POD_IP):{{ .Values.metrics.port }}"{{ else }}""{{ end }}
{{- end }}

{{- define "comet.metricsPort" -}}
{{- if .Values.metrics.port }}
- name: metrics
  containerPort: {{ .Values.metrics.port }}
{{- end }}
{{- end }}

{{- define "comet.metricsAnnotations" -}}
{{- if and .Values.metrics.port .Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
The web console of a controller (or standalone) pod (controller.ports.console): the
COMET_CONSOLE_LISTEN variable and the container port.
*/}}
{{- define "comet.consoleEnv" -}}
- name: COMET_CONSOLE_LISTEN
  value: {{ if .Values.controller.ports.console }}"$(POD_IP):{{ .Values.controller.ports.console }}"{{ else }}""{{ end }}
{{- end }}

{{- define "comet.consolePort" -}}
{{- if .Values.controller.ports.console }}
- name: console
  containerPort: {{ .Values.controller.ports.console }}
{{- end }}
{{- end }}

{{/* Hints of the keys every role's pods set through these variables. */}}
{{- define "comet.observeHints" -}}
{{- toJson (dict "metrics.listen" "set metrics.port (0 turns the listener off)") }}
{{- end }}
