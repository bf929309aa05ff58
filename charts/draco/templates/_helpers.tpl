{{/*
Names are DNS labels: at most 63 characters, no trailing dash after truncation.
*/}}
{{- define "draco.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name (when it already contains the chart name),
else "<release>-<chart>".
*/}}
{{- define "draco.fullname" -}}
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

{{/*
A name derived from the full name with a suffix; the full name is shortened first so the
suffix always survives the 63-character limit.
Usage: include "draco.suffixed" (list . "operator")
*/}}
{{- define "draco.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $max := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "draco.fullname" $ctx | trunc $max | trimSuffix "-") $suffix }}
{{- end }}

{{- define "draco.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "draco.selectorLabels" -}}
app.kubernetes.io/name: {{ include "draco.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "draco.labels" -}}
helm.sh/chart: {{ include "draco.chart" . }}
{{ include "draco.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: draco
{{- end }}

{{/*
Labels for objects that belong to the release but not to the operator pod (RBAC, monitors,
dashboards): no component label, so they never match the Deployment's selector.
*/}}
{{- define "draco.commonLabels" -}}
helm.sh/chart: {{ include "draco.chart" . }}
app.kubernetes.io/name: {{ include "draco.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: draco
{{- end }}

{{- define "draco.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "draco.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference: digest wins over tag; tag defaults to the chart's appVersion.
*/}}
{{- define "draco.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespace the operator watches in namespaced mode.
*/}}
{{- define "draco.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}
