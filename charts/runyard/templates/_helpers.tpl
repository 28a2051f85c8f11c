{{/* Name of the release's objects. */}}
{{- define "runyard.fullname" -}}
{{- if contains "runyard" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-runyard" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "runyard.selectorLabels" -}}
app.kubernetes.io/name: runyard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runyard.labels" -}}
{{ include "runyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "runyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) -}}
{{- end -}}

{{/* The namespace whose runs are managed when rbac.clusterWide is false. */}}
{{- define "runyard.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.watchNamespace -}}
{{- end -}}

{{/* The runyard pods' security context: podSecurityContext, without fixed
IDs on OpenShift (its restricted SCC assigns them). */}}
{{- define "runyard.podSecurityContext" -}}
{{- $psc := deepCopy .Values.podSecurityContext -}}
{{- if .Values.openshift -}}
{{- $psc = omit $psc "runAsUser" "runAsGroup" "fsGroup" -}}
{{- end -}}
{{- toYaml $psc -}}
{{- end -}}
