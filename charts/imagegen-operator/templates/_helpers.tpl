{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "imagegen-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "imagegen-operator.fullname" -}}
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

{{- define "imagegen-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: never change for a release (Deployment selectors are immutable). */}}
{{- define "imagegen-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagegen-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "imagegen-operator.labels" -}}
helm.sh/chart: {{ include "imagegen-operator.chart" . }}
{{ include "imagegen-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "imagegen-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagegen-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "imagegen-operator.leaseName" -}}
{{- default (include "imagegen-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "imagegen-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
An env var from a plain value or from a key of an existing Secret:
  include "imagegen-operator.envFrom" (dict "name" "IMAGEGEN_REDIS_URL" "value" .Values.redis.url
    "secret" .Values.redis.existingSecret "key" .Values.redis.key)
Renders nothing when neither is set.
*/}}
{{- define "imagegen-operator.envFrom" -}}
{{- if .secret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- else if .value }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}
