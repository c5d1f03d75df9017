{{/* The chart name, as overridden. */}}
{{- define "fro.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The objects' base name: the release name, with the chart name appended unless it holds it. */}}
{{- define "fro.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "fro.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "fro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels that select the operator's pods; never change them, a Deployment's selector is fixed. */}}
{{- define "fro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fro.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Whether /metrics is served over HTTPS with authorization: "true" or "false". */}}
{{- define "fro.metricsSecure" -}}
{{- if eq (toString .Values.metrics.secure) "auto" -}}
{{- ternary "true" "false" (eq .Values.scope "cluster") -}}
{{- else -}}
{{- toString .Values.metrics.secure -}}
{{- end -}}
{{- end -}}

{{/* Replicas: one when the records volume (ReadWriteOnce) is used. */}}
{{- define "fro.replicas" -}}
{{- ternary 1 .Values.replicaCount .Values.records.enabled -}}
{{- end -}}

{{- define "fro.leaseName" -}}
{{- include "fro.fullname" . }}.forgejo.brooktrails.org
{{- end -}}
