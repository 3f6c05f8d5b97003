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

{{/* Labels on every object but the InferenceService: the stable labels and the versions. */}}
{{- define "model-serving.labels" -}}
helm.sh/chart: {{ include "model-serving.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "model-serving.stableLabels" . }}
{{- end }}

{{/* Labels without versions, for the InferenceService: KServe copies its labels into the Knative
revision template, so a label that changes with the chart would roll every model to a new
revision, with all traffic, on a chart upgrade. */}}
{{- define "model-serving.stableLabels" -}}
{{ include "model-serving.selectorLabels" . }}
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

{{/* Name of the predictor's ServiceAccount (read-only registry access). */}}
{{- define "model-serving.predictorServiceAccountName" -}}
{{- $sa := .Values.serviceAccounts.predictor }}
{{- if $sa.create }}
{{- default (printf "%s-predictor" (include "model-serving.fullname" .) | trunc 63 | trimSuffix "-") $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Name of the trainer's ServiceAccount (read-write registry access). */}}
{{- define "model-serving.trainerServiceAccountName" -}}
{{- $sa := .Values.serviceAccounts.trainer }}
{{- if $sa.create }}
{{- default (printf "%s-trainer" (include "model-serving.fullname" .) | trunc 63 | trimSuffix "-") $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Name of the rollout ConfigMap: model-rollout's state and this release's rollout defaults. */}}
{{- define "model-serving.rolloutConfigMapName" -}}
{{- printf "%s-rollout" (include "model-serving.isvcName" .) }}
{{- end }}

{{/* Fail with a clear message when the cluster being installed into lacks an API kind. Only a
real install knows the cluster's APIs: `helm template` and `helm lint` see a default set without
KServe, so the check runs when the KServe API is present (pass --api-versions to check offline). */}}
{{- define "model-serving.requireKind" -}}
{{- $root := index . 0 }}
{{- $kind := index . 1 }}
{{- $why := index . 2 }}
{{- if and ($root.Capabilities.APIVersions.Has "serving.kserve.io/v1beta1") (not ($root.Capabilities.APIVersions.Has $kind)) }}
{{- fail (printf "%s needs the %s kind, which this cluster's API does not serve: %s" $why $kind "install its CRDs, or switch the option off") }}
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

{{/* The experiment's treatment: experiment.treatmentStorageUri, else registry/NAME/treatmentVersion.
The predictor reads it itself, so it must be a URI the server's fsspec reads (gs://, s3://). */}}
{{- define "model-serving.treatmentUri" -}}
{{- $experiment := .Values.experiment }}
{{- if not (kindIs "invalid" .Values.canary.trafficPercent) }}
{{- fail "experiment.enabled and canary.trafficPercent do not mix: finish the canary (trafficPercent null) first, so the experiment's revision takes all traffic" }}
{{- end }}
{{- $uri := $experiment.treatmentStorageUri }}
{{- if not $uri }}
{{- $registry := required "registry.uri (or experiment.treatmentStorageUri) is required with experiment.enabled" .Values.registry.uri }}
{{- $version := required "experiment.treatmentVersion (or experiment.treatmentStorageUri) is required with experiment.enabled" $experiment.treatmentVersion }}
{{- if eq $version .Values.model.version }}
{{- fail (printf "experiment.treatmentVersion %s is model.version, the control: name another version" $version) }}
{{- end }}
{{- $uri = printf "%s/%s/%s" (trimSuffix "/" $registry) .Values.model.name $version }}
{{- end }}
{{- if not (or (hasPrefix "gs://" $uri) (hasPrefix "s3://" $uri)) }}
{{- fail (printf "the experiment's treatment %s must be a gs:// or s3:// URI: the predictor reads it itself (KServe's storage initializer fetches only the control)" $uri) }}
{{- end }}
{{- $uri }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest pins it, else the tag or
appVersion. The repository has no default: an image nobody pushed can never be pulled, so a
release without one fails to render, naming the values to set. */}}
{{- define "model-serving.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- $value := index . 2 }}
{{- if not $image.repository }}
{{- $set := "image.repository=europe-docker.pkg.dev/my-project/models/model-server" }}
{{- if $root.Values.trainer.enabled }}
{{- $set = printf "%s,trainer.image.repository=europe-docker.pkg.dev/my-project/models/model-trainer" $set }}
{{- end }}
{{- fail (printf "%s is required: the registry path the image was pushed to. Build and push the images first (docker/server.Dockerfile, docker/trainer.Dockerfile; see Images in the chart README), then set them, e.g. --set %s" $value $set) }}
{{- end }}
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

{{/* The prediction log's URI: predictionLog.uri, else the folder prediction-log beside
registry.uri (the server's own rule: prediction_log.schema.default_log_uri). The predictor writes
it itself (KServe's storage initializer only reads), so it is gs:// or s3://. A registry at a
bucket's root has nothing beside it, and the log and the registry never hold one another: the
registry would list the log as a model, and a grant to create objects under the log's prefix
would reach the registry's versions. */}}
{{- define "model-serving.predictionLogUri" -}}
{{- $registry := regexReplaceAll "/+$" .Values.registry.uri "" }}
{{- $uri := regexReplaceAll "/+$" .Values.predictionLog.uri "" }}
{{- $ask := "set predictionLog.uri=gs://BUCKET/prediction-log (or s3://), or predictionLog.enabled=false" }}
{{- if not $uri }}
{{- if not $registry }}
{{- fail (printf "predictionLog.uri is required when registry.uri is empty: model.storageUri names one version, not the registry the log would go beside; %s" $ask) }}
{{- else if not (regexMatch "^(gs|s3)://" $registry) }}
{{- fail (printf "the prediction log cannot go beside registry.uri %s: the predictor writes the log itself, to gs:// or s3:// only; %s" .Values.registry.uri $ask) }}
{{- else if not (regexMatch "^(gs|s3)://[^/]+/" $registry) }}
{{- fail (printf "registry.uri %s is a bucket's root: there is no folder beside it for the prediction log, and the log must not go inside the registry; %s" .Values.registry.uri $ask) }}
{{- end }}
{{- $uri = printf "%s/prediction-log" (regexReplaceAll "/[^/]+$" $registry "") }}
{{- end }}
{{- if and $registry (or (eq $uri $registry) (hasPrefix (printf "%s/" $registry) $uri) (hasPrefix (printf "%s/" $uri) $registry)) }}
{{- fail (printf "the prediction log %s and the registry %s must not hold one another (the registry would list the log as a model, and the log's create grant would reach the registry's versions): %s" $uri .Values.registry.uri "put predictionLog.uri beside the registry, e.g. its default, the folder prediction-log next to it") }}
{{- end }}
{{- $uri }}
{{- end }}
