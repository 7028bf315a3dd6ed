{{/* The chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "cz-allocation-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects: the release name, prefixed to the chart name unless it contains it. */}}
{{- define "cz-allocation-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart: name-version, as in the helm.sh/chart label. */}}
{{- define "cz-allocation-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "cz-allocation-agent.labels" -}}
helm.sh/chart: {{ include "cz-allocation-agent.chart" . }}
{{ include "cz-allocation-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cz-allocation-agent
{{- end }}

{{/* Labels that select the agent pod: never change them in an upgrade (selectors are immutable). */}}
{{- define "cz-allocation-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cz-allocation-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the agent runs as. */}}
{{- define "cz-allocation-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cz-allocation-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the rules: an existing one or the chart's. */}}
{{- define "cz-allocation-agent.rulesConfigMap" -}}
{{- .Values.rules.existingConfigMap | default (printf "%s-rules" (include "cz-allocation-agent.fullname" .)) }}
{{- end }}

{{/* The claim mounted at /data: an existing one or the chart's. */}}
{{- define "cz-allocation-agent.claimName" -}}
{{- .Values.persistence.existingClaim | default (include "cz-allocation-agent.fullname" .) }}
{{- end }}

{{/* The image reference: [registry/]repository, then @digest when given, else :tag (default: the appVersion). */}}
{{- define "cz-allocation-agent.image" -}}
{{- $name := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $name = printf "%s/%s" . $name }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $name .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $name (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "true" when the replicas elect a leader: always with more than one replica, else when asked for. */}}
{{- define "cz-allocation-agent.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/* The Lease the replicas compete for, in the release namespace. */}}
{{- define "cz-allocation-agent.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "cz-allocation-agent.fullname" .) }}
{{- end }}

{{/* "true" when the agent calls the Kubernetes API with the pod's token; otherwise no token is mounted. */}}
{{- define "cz-allocation-agent.needsToken" -}}
{{- if or .Values.rbac.readNamespaces (include "cz-allocation-agent.leaderElection" .) }}true{{ end }}
{{- end }}

{{/* Fails the render when replicas could not share the store and the inbox, or two leaders could overlap. */}}
{{- define "cz-allocation-agent.validateReplicas" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- if and (not .Values.store.existingSecret) (hasPrefix "sqlite" .Values.store.url) }}
{{- fail "replicaCount > 1 needs a shared store: SQLite on a ReadWriteOnce volume cannot be shared between pods; set store.existingSecret (or store.url) to a PostgreSQL URL" }}
{{- end }}
{{- if and (not .Values.persistence.existingClaim) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail "replicaCount > 1 needs a shared bill inbox: set persistence.accessModes to [ReadWriteMany] or persistence.existingClaim to a claim every replica can mount" }}
{{- end }}
{{- end }}
{{- with .Values.leaderElection }}
{{- if not (and (gt (int .leaseDurationSeconds) (int .renewDeadlineSeconds)) (gt (float64 .renewDeadlineSeconds) (mulf 1.2 .retryPeriodSeconds))) }}
{{- fail "leaderElection needs leaseDurationSeconds > renewDeadlineSeconds > 1.2 x retryPeriodSeconds (a leader must stop before a follower takes over)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The TCP port of a URL: its own, else its scheme's (https 443, postgresql 5432, else 80). */}}
{{- define "cz-allocation-agent.urlPort" -}}
{{- $port := regexReplaceAll "^[^:]*://(?:[^/?#]*@)?(?:\\[[^\\]]*\\]|[^:/?#]*)(?::([0-9]+))?(?:[/?#].*)?$" . "${1}" }}
{{- if regexMatch "^[0-9]+$" $port }}{{ $port }}
{{- else if hasPrefix "https:" . }}443
{{- else if hasPrefix "postgres" . }}5432
{{- else }}80
{{- end }}
{{- end }}

{{/* The ports of the Prometheus URLs the chart knows (prometheus.url, the rules' prometheus_url), as a JSON list. */}}
{{- define "cz-allocation-agent.prometheusPorts" -}}
{{- $urls := list }}
{{- with .Values.prometheus.url }}
{{- $urls = append $urls . }}
{{- end }}
{{- if not .Values.rules.existingConfigMap }}
{{- range $name, $cluster := (fromYaml .Values.rules.content).clusters | default dict }}
{{- with ($cluster | default dict).prometheus_url }}
{{- $urls = append $urls . }}
{{- end }}
{{- end }}
{{- end }}
{{- $ports := list }}
{{- range $urls }}
{{- $ports = append $ports (include "cz-allocation-agent.urlPort" . | int) }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{/* The port of the PostgreSQL store as a JSON list: that of store.url, 5432 with store.existingSecret (a URL the
chart cannot read), none for SQLite. */}}
{{- define "cz-allocation-agent.postgresqlPorts" -}}
{{- if .Values.store.existingSecret }}[5432]
{{- else if hasPrefix "postgres" .Values.store.url }}[{{ include "cz-allocation-agent.urlPort" .Values.store.url }}]
{{- else }}[]
{{- end }}
{{- end }}
