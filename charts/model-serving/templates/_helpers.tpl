{{/* Chart name, overridable by nameOverride; cut to 63 characters (a DNS-1123 label). */}}
{{- define "model-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, else the release name (with the chart name unless it holds it). */}}
{{- define "model-serving.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "model-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object: selector labels, versions, and commonLabels. */}}
{{- define "model-serving.labels" -}}
helm.sh/chart: {{ include "model-serving.chart" . }}
{{ include "model-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: model-serving
model-serving/model-name: {{ .Values.model.name | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades, nothing versioned. */}}
{{- define "model-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount the predictor and the trainer run as. */}}
{{- define "model-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "model-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the ServiceAccount the rollout Role is bound to when no subjects are given. */}}
{{- define "model-serving.rolloutServiceAccountName" -}}
{{- printf "%s-rollout" (include "model-serving.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The InferenceService's name: the model name, so URLs read /v2/models/NAME on host NAME. */}}
{{- define "model-serving.isvcName" -}}
{{- required "model.name is required: the registered model to serve" .Values.model.name }}
{{- end }}

{{/* storageUri for KServe's storage initializer: model.storageUri, else registry/NAME/VERSION. */}}
{{- define "model-serving.storageUri" -}}
{{- if .Values.model.storageUri }}
{{- .Values.model.storageUri }}
{{- else }}
{{- $registry := required "registry.uri (or model.storageUri) is required: where the model versions live" .Values.registry.uri }}
{{- $version := required "model.version (or model.storageUri) is required: the exact version to serve, e.g. v3" .Values.model.version }}
{{- printf "%s/%s/%s" (trimSuffix "/" $registry) .Values.model.name $version }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest pins it, else the tag or appVersion. */}}
{{- define "model-serving.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* Labels on the monitoring objects: common labels, the kube-prometheus-stack release label, extras. */}}
{{- define "model-serving.monitoringLabels" -}}
{{ include "model-serving.labels" . }}
{{- with .Values.monitoring.prometheusRelease }}
release: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}
