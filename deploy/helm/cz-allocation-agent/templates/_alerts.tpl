{{/* The series of this release, as the ServiceMonitor's target labels them: job is the Service's name. */}}
{{- define "cz-allocation-agent.alertSelector" -}}
job={{ include "cz-allocation-agent.fullname" . | quote }}, namespace={{ .Release.Namespace | quote }}
{{- end }}

{{/* An alert's `for` and labels (its severity, then `labels`, then prometheusRule.alertLabels), as in
kube-prometheus-stack: prometheusRule.customRules.<alert> gives `for` and `severity`.
Call with (dict "alert" NAME "root" $), and "labels" for labels of the rule itself. */}}
{{- define "cz-allocation-agent.alertSettings" -}}
{{- $rules := .root.Values.prometheusRule }}
{{- $custom := index $rules.customRules .alert }}
for: {{ $custom.for }}
labels:
  severity: {{ $custom.severity }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $rules.alertLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The alert's runbook: its section of the runbooks file, whose anchor is the alert's name in lower case. */}}
{{- define "cz-allocation-agent.runbookUrl" -}}
{{- $base := .root.Values.prometheusRule.runbookBaseUrl | default (printf "%s/blob/main/deploy/helm/%s/RUNBOOKS.md" .root.Chart.Home .root.Chart.Name) }}
{{- printf "%s#%s" $base (lower .alert) }}
{{- end }}
