{{/* The product image, one for every component. */}}
{{- define "mipart.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels on every object: what it is part of, which release and chart made it. */}}
{{- define "mipart.labels" -}}
app.kubernetes.io/part-of: mipart
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels of one component; its pods are selected by app.kubernetes.io/name alone. */}}
{{- define "mipart.componentLabels" -}}
app.kubernetes.io/name: {{ .name }}
{{ include "mipart.labels" .root }}
{{- end -}}

{{/* The service account the extender runs as, which binds mipart's pods: in "second" mode it
shares mipart-scheduler's pod and account; in "existing" mode it runs alone. */}}
{{- define "mipart.extenderAccount" -}}
{{ ternary "mipart-scheduler" "mipart-extender" (eq .Values.scheduler.mode "second") }}
{{- end -}}

{{/* CEL: whether the object named by the argument ("object", "oldObject") has a mipart.io/
annotation. One definition for the webhooks' matchConditions and the admission policies. */}}
{{- define "mipart.hasMipartAnnotation" -}}
{{ . }}.metadata.?annotations.orValue({}).exists(k, k.startsWith('mipart.io/'))
{{- end -}}

{{/* CEL: the node of the pod the caller's token is bound to ('' for a token bound to no
pod). The API server sets it for a pod-bound service account token. */}}
{{- define "mipart.callerNode" -}}
'authentication.kubernetes.io/node-name' in request.userInfo.extra && size(request.userInfo.extra['authentication.kubernetes.io/node-name']) == 1 ? request.userInfo.extra['authentication.kubernetes.io/node-name'][0] : ''
{{- end -}}

{{/* The TLS mode after "auto" is resolved against the cluster's APIs. */}}
{{- define "mipart.tlsMode" -}}
{{- $mode := .Values.tls.mode -}}
{{- if eq $mode "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}cert-manager{{- else -}}builtin{{- end -}}
{{- else -}}
{{ $mode }}
{{- end -}}
{{- end -}}

{{/* Whether to ship the NodeFeatureRule that labels MI300X nodes. */}}
{{- define "mipart.nodeFeatureRule" -}}
{{- $want := toString .Values.daemon.nodeFeatureRule -}}
{{- if eq $want "auto" -}}
{{- if .Capabilities.APIVersions.Has "nfd.k8s-sigs.io/v1alpha1" -}}true{{- end -}}
{{- else if eq $want "true" -}}true
{{- end -}}
{{- end -}}

{{/* Whether to ship the ClusterServingRuntime for KServe: "auto" when the cluster serves it
and an image is given; "true" insists (and needs the image). */}}
{{- define "mipart.kserveRuntime" -}}
{{- $r := .Values.kserve.runtime -}}
{{- $want := toString $r.enabled -}}
{{- if eq $want "auto" -}}
{{- if and $r.image (.Capabilities.APIVersions.Has "serving.kserve.io/v1alpha1/ClusterServingRuntime") -}}true{{- end -}}
{{- else if eq $want "true" -}}true
{{- end -}}
{{- end -}}

{{/* Pod-level securityContext for the components that run restricted. */}}
{{- define "mipart.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Container-level securityContext for the components that run restricted. */}}
{{- define "mipart.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{/* The logging flags every component takes. */}}
{{- define "mipart.logFlags" -}}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- end -}}
