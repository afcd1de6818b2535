{{/* The chart name, overridable. */}}
{{- define "kipsec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: "kipsec" unless overridden, so the operator's
Service is "kipsec-operator", the address the operator gives the injected sidecars. */}}
{{- define "kipsec.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "kipsec.name" . -}}
{{- end -}}
{{- end -}}

{{- define "kipsec.operatorName" -}}
{{- printf "%s-operator" (include "kipsec.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kipsec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kipsec.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "kipsec.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "kipsec.fullname" .) -}}
{{- end -}}

{{- define "kipsec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kipsec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kipsec
{{- end -}}

{{- define "kipsec.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kipsec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kipsec.operatorImage" -}}
{{- $image := .Values.operator.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kipsec.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) -}}
{{- end -}}

{{/* Peering needs two replicas and leader election on; otherwise --standalone. */}}
{{- define "kipsec.peering" -}}
{{- if and .Values.leaderElection.enabled (gt (int .Values.operator.replicas) 1) -}}
true
{{- end -}}
{{- end -}}

{{- define "kipsec.operatorUrl" -}}
{{- printf "https://%s.%s.svc:%d" (include "kipsec.operatorName" .) .Release.Namespace (int .Values.operator.port) -}}
{{- end -}}
