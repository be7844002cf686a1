{{/*
Names. Kubernetes names (and label values) are limited to 63 characters: every name is trimmed,
and a suffixed name trims the prefix, never the suffix, so two names never collide.
*/}}
{{- define "batchpredict.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "batchpredict.fullname" -}}
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

{{/* "<fullname>-<suffix>" within 63 characters. Call with (dict "ctx" $ "suffix" "x"). */}}
{{- define "batchpredict.suffixed" -}}
{{- $room := int (sub 62 (len .suffix)) }}
{{- printf "%s-%s" (include "batchpredict.fullname" .ctx | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{- define "batchpredict.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "batchpredict.selectorLabels" -}}
app.kubernetes.io/name: {{ include "batchpredict.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "batchpredict.labels" -}}
helm.sh/chart: {{ include "batchpredict.chart" . }}
{{ include "batchpredict.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: batchpredict
{{- end }}

{{- define "batchpredict.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "batchpredict.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "batchpredict.workerClusterRole" -}}
{{- default (include "batchpredict.suffixed" (dict "ctx" . "suffix" "worker")) .Values.worker.clusterRoleName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The kopf peering object's name; peering is on when more than one replica runs. */}}
{{- define "batchpredict.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}{{ include "batchpredict.fullname" . }}{{ end }}
{{- end }}

{{- define "batchpredict.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "batchpredict.workerImage" -}}
{{- if .Values.worker.image.digest }}
{{- printf "%s@%s" (default .Values.image.repository .Values.worker.image.repository) .Values.worker.image.digest }}
{{- else if or .Values.worker.image.repository .Values.worker.image.tag }}
{{- $repo := default .Values.image.repository .Values.worker.image.repository }}
{{- printf "%s:%s" $repo (default (default .Chart.AppVersion .Values.image.tag) .Values.worker.image.tag) }}
{{- else }}
{{- include "batchpredict.image" . }}
{{- end }}
{{- end }}

{{/*
The operator's configuration file (controller/config.py OperatorConfig, camelCase keys).
Optional keys are left out when unset so the operator's defaults apply.
*/}}
{{- define "batchpredict.config" -}}
{{- $c := dict
  "workerImage" (include "batchpredict.workerImage" .)
  "workerCommand" .Values.worker.command
  "imagePullPolicy" (default .Values.image.pullPolicy .Values.worker.image.pullPolicy)
  "workerServiceAccount" .Values.worker.serviceAccountName
  "workerClusterRole" (include "batchpredict.workerClusterRole" .)
  "nodePools" .Values.nodePools
  "nodePoolsConfigMap" (printf "%s/%s" .Release.Namespace (include "batchpredict.suffixed" (dict "ctx" . "suffix" "node-pools")))
  "kueue" .Values.kueue.enabled
  "statusIntervalSeconds" .Values.statusIntervalSeconds
  "failedItemsLimit" .Values.failedItemsLimit
  "metricsPort" .Values.metrics.port
  "policy" .Values.policy
  "startedByVerified" (include "batchpredict.admissionPolicy" . | eq "true")
}}
{{- if .Values.defaultTritonUrl }}
{{- $_ := set $c "defaultTritonUrl" .Values.defaultTritonUrl }}
{{- end }}
{{- if not (kindIs "invalid" .Values.maxRunning) }}
{{- $_ := set $c "maxRunning" .Values.maxRunning }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* "true" when the chart installs the tenancy ValidatingAdmissionPolicy (the API is served). */}}
{{- define "batchpredict.admissionPolicy" -}}
{{- and .Values.admissionPolicy.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") }}
{{- end }}

{{/* The dashboard's labels: the chart's, with its own component (never the operator's selector). */}}
{{- define "batchpredict.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "batchpredict.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "batchpredict.dashboardLabels" -}}
helm.sh/chart: {{ include "batchpredict.chart" . }}
{{ include "batchpredict.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: batchpredict
{{- end }}
