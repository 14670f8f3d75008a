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
The enabled components with a metrics endpoint, as JSON: name -> values, command, consumer
group, the Prometheus job name (the same job names as docker-compose's scrape configuration,
which the alert rules use), the settings prefix and whether it runs exactly one replica
(singleton: no autoscaling or PodDisruptionBudget, replaced with the Recreate strategy).
The proctor console has no metrics endpoint: templates/console.yaml.
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
{{- if .Values.driftMonitor.enabled -}}
{{- $_ := set $components "drift-monitor" (dict "values" .Values.driftMonitor "command" (list "drift" "run") "group" .Values.driftMonitor.groupId "job" "facegate-drift-monitor" "prefix" "FACEGATE_DRIFT_" "singleton" true) -}}
{{- end -}}
{{- if .Values.canaryController.enabled -}}
{{- $_ := set $components "canary-controller" (dict "values" .Values.canaryController "command" (list "rollout" "run") "group" "none (reads every partition)" "job" "facegate-canary-controller" "prefix" "FACEGATE_CANARY_" "singleton" true) -}}
{{- end -}}
{{- if .Values.trainer.enabled -}}
{{- $_ := set $components "trainer" (dict "values" .Values.trainer "command" (list "train" "serve") "group" .Values.trainer.groupId "job" "facegate-trainer" "prefix" "FACEGATE_RETRAIN_" "singleton" true) -}}
{{- end -}}
{{- toJson $components -}}
{{- end -}}

{{/* The image of a component: its own image.repository/tag when given, else the chart's. */}}
{{- define "facegate.componentImage" -}}
{{- $image := dig "image" "repository" "" .values -}}
{{- if $image -}}
{{- printf "%s:%s" $image (default .root.Chart.AppVersion (dig "image" "tag" "" .values)) -}}
{{- else -}}
{{- include "facegate.image" .root -}}
{{- end -}}
{{- end -}}

{{- define "facegate.consoleUsersSecret" -}}
{{- default (printf "%s-console-users" (include "facegate.fullname" .)) .Values.console.users.existingSecret -}}
{{- end -}}
