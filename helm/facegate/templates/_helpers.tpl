{{/* Names, labels and the per-component settings shared by the templates. */}}

{{- define "facegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegate.fullname" -}}
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

{{- define "facegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "facegate.labels" -}}
helm.sh/chart: {{ include "facegate.chart" . }}
app.kubernetes.io/name: {{ include "facegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: facegate
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "worker"). */}}
{{- define "facegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facegate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "facegate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "facegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "facegate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "facegate.secretName" -}}
{{- default (printf "%s-credentials" (include "facegate.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/*
The enabled components as JSON: name -> values, command, consumer group and the Prometheus
job name (the same job names as docker-compose's scrape configuration, which the alert rules use).
*/}}
{{- define "facegate.components" -}}
{{- $components := dict -}}
{{- if .Values.streamProcessor.enabled -}}
{{- $_ := set $components "stream-processor" (dict "values" .Values.streamProcessor "command" (list "stream-processor") "group" .Values.streamProcessor.appId "job" "facegate-stream-processor" "prefix" "FACEGATE_STREAM_") -}}
{{- end -}}
{{- if .Values.worker.enabled -}}
{{- $_ := set $components "inference-worker" (dict "values" .Values.worker "command" (list "worker") "group" .Values.worker.groupId "job" "facegate-inference-worker" "prefix" "FACEGATE_WORKER_") -}}
{{- end -}}
{{- if .Values.feedbackConsumer.enabled -}}
{{- $_ := set $components "feedback-consumer" (dict "values" .Values.feedbackConsumer "command" (list "feedback-consumer") "group" .Values.feedbackConsumer.groupId "job" "facegate-feedback-consumer" "prefix" "FACEGATE_CONSOLE_") -}}
{{- end -}}
{{- toJson $components -}}
{{- end -}}
