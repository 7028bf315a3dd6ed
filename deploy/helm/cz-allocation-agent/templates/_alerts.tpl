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

{{/* A budget alert's expression: by how much the open month's `cost` (cz_allocation_cost month to date, or
cz_allocation_forecast_cost at month end), summed per `label` (company or service_code) and currency, is over the
cz_budget_amount of that `scope` (company or service); only what is over. The open month is the one whose YYYY-MM is
the current UTC year and month. The budget is the largest any replica exposes (only the leader does, but a change
of leader may briefly show two). The difference is rounded to a thousandth: a float sum of cents that is the budget
exactly (0.1 + 0.7 + 999.2) can come out a hair above it.
Call with (dict "cost" METRIC "scope" SCOPE "label" LABEL "root" $). */}}
{{- define "cz-allocation-agent.overBudgetExpr" -}}
{{- $selector := include "cz-allocation-agent.alertSelector" .root -}}
round(
  sum by (job, namespace, period, {{ .label }}, currency) (
    {{ .cost }}{ {{- $selector -}} }
    and on (period)
      label_replace(count_values("open_month", year() * 100 + month()), "period", "$1-$2", "open_month", "([0-9]{4})([0-9]{2})")
  )
  - on (job, namespace, {{ .label }}, currency) group_left
    max by (job, namespace, {{ .label }}, currency) (cz_budget_amount{scope={{ .scope | quote }}, {{ $selector }}}),
  0.001
) > 0
{{ end }}

{{/* A budget alert's budget, as a Prometheus annotation template: the cz_budget_amount of the alert's company or
service (`label`) and currency, to the cent, without a trailing `.00`.
Call with (dict "scope" SCOPE "label" LABEL). */}}
{{- define "cz-allocation-agent.budgetAmount" -}}
{{- printf `{{ with printf "max(cz_budget_amount{scope=\"%s\", %s=%%q, currency=%%q, job=%%q, namespace=%%q})" $labels.%s $labels.currency $labels.job $labels.namespace | query }}{{ . | first | value | printf "%%.2f" | reReplaceAll "\\.00$" "" }}{{ end }}` .scope .label .label }}
{{- end }}
