{{/*
Helpers shared by the umbrella chart and every subchart. Named templates are
global to a chart and its subcharts, so the subcharts use these instead of
carrying copies. Each takes a dict: "ctx" is the calling template's root
context (.) and "component" the deployable's name (smi-watcher, ...).

Object names are fixed, "osm-<component>", because the services' defaults and
the cert-authority's Bootstrap role map name them so; one mesh is installed
per namespace. Cluster-scoped objects add the namespace to stay unique.
*/}}

{{/* osm.name: the namespaced name of a component's objects. */}}
{{- define "osm.name" -}}
osm-{{ .component }}
{{- end }}

{{/* osm.clusterName: the name of a component's cluster-scoped objects. */}}
{{- define "osm.clusterName" -}}
osm-{{ .ctx.Release.Namespace }}-{{ .component }}
{{- end }}

{{- define "osm.selectorLabels" -}}
app.kubernetes.io/name: osm-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{- define "osm.labels" -}}
{{ include "osm.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: osm
app.kubernetes.io/version: {{ include "osm.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ .ctx.Chart.Name }}-{{ .ctx.Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
osm.tag: the component's image tag: its own, else the global one, else the
chart's appVersion. An "image" in the dict (the edge canary's) replaces the
component's image values.
*/}}
{{- define "osm.tag" -}}
{{- $img := .image | default .ctx.Values.image | default dict -}}
{{- $img.tag | default .ctx.Values.global.image.tag | default .ctx.Chart.AppVersion -}}
{{- end }}

{{/*
osm.image: the component's image, <registry>/osm-<component> (the names
`make images` builds) unless image.repository is set; a digest, when set,
pins it (repository@digest) and the tag is then ignored.
*/}}
{{- define "osm.image" -}}
{{- $img := .image | default .ctx.Values.image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/osm-%s" .ctx.Values.global.image.registry .component) -}}
{{- if $img.digest -}}
{{ $repo }}@{{ $img.digest }}
{{- else -}}
{{ $repo }}:{{ include "osm.tag" . }}
{{- end -}}
{{- end }}

{{/* osm.podSecurityContext: every control-plane pod runs as a non-root user with seccomp RuntimeDefault. */}}
{{- define "osm.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .ctx.Values.global.securityContext.runAsUser }}
runAsGroup: {{ .ctx.Values.global.securityContext.runAsGroup }}
fsGroup: {{ .ctx.Values.global.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "osm.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* osm.podAnnotations: Prometheus scrape annotations for the admin listener's /metrics, plus the component's own. */}}
{{- define "osm.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .ctx.Values.global.adminPort | quote }}
prometheus.io/path: /metrics
{{- with .ctx.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* osm.scheduling: the pod spec fields that place the component's pods. */}}
{{- define "osm.scheduling" -}}
{{- $v := .ctx.Values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .ctx.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* osm.adminPort / osm.probes: the admin listener (/healthz, /readyz, /metrics) every service has. */}}
{{- define "osm.adminArgs" -}}
- --admin-addr=:{{ .ctx.Values.global.adminPort }}
- --log-level={{ .ctx.Values.logLevel | default .ctx.Values.global.logLevel }}
- --log-format=json
{{- end }}

{{- define "osm.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  failureThreshold: 3
{{- end }}

{{- define "osm.adminPort" -}}
- name: admin
  containerPort: {{ .ctx.Values.global.adminPort }}
  protocol: TCP
{{- end }}

{{/* osm.podNameEnv: OSM_POD_NAME from the downward API (--pod-name names the replica in leases and status). */}}
{{- define "osm.podNameEnv" -}}
- name: OSM_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* osm.meshArgs: the control-plane flags (app.ControlPlane) a component takes; pass "flags" as a list of their names. */}}
{{- define "osm.meshArgs" -}}
{{- $g := .ctx.Values.global -}}
{{- range .flags }}
{{- if eq . "namespace" }}
- --namespace={{ $.ctx.Release.Namespace }}
{{- else if eq . "mesh-name" }}
- --mesh-name={{ $g.meshName }}
{{- else if eq . "mesh-config" }}
- --mesh-config={{ $g.meshConfigName }}
{{- else if eq . "trust-domain" }}
- --trust-domain={{ $g.trustDomain }}
{{- else if eq . "cluster-domain" }}
- --cluster-domain={{ $g.clusterDomain }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NATS client: the role's user, its password from the Secret osm-nats-user-<role>
(the nats subchart creates it), TLS to the NATS Service verified with the
chart-generated NATS CA (Secret osm-nats-ca, ca.crt only).
*/}}
{{- define "osm.natsArgs" -}}
- --nats-url={{ include "osm.natsURL" . }}
- --nats-user={{ .role }}
- --nats-ca=/etc/osm/nats-ca/ca.crt
{{- end }}

{{- define "osm.natsURL" -}}
tls://osm-nats.{{ .ctx.Release.Namespace }}.svc.{{ .ctx.Values.global.clusterDomain }}:4222
{{- end }}

{{- define "osm.natsEnv" -}}
- name: OSM_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: osm-nats-user-{{ .role }}
      key: password
{{- end }}

{{- define "osm.natsKVReplicas" -}}
- --kv-replicas={{ .ctx.Values.global.nats.replicas }}
{{- end }}

{{- define "osm.natsVolumeMount" -}}
- name: nats-ca
  mountPath: /etc/osm/nats-ca
  readOnly: true
{{- end }}

{{- define "osm.natsVolume" -}}
- name: nats-ca
  secret:
    secretName: osm-nats-ca
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}

{{/*
Cert-authority client (injector-webhook, xds-edge): the CA's Service, the
roots that verify it, and the projected ServiceAccount token with the CA's
Bootstrap audience (--token-audiences) at the flag's default path.
*/}}
{{- define "osm.caClientArgs" -}}
- --ca-addr=osm-cert-authority.{{ .ctx.Release.Namespace }}.svc:{{ .ctx.Values.global.certAuthority.port }}
- --ca-trust-file=/etc/osm/ca-roots/ca.crt
- --ca-bootstrap-token-file=/var/run/secrets/openservicemesh.io/cert-authority/token
- --ca-bootstrap-token-type=service-account
{{- end }}

{{- define "osm.caClientVolumeMounts" -}}
- name: ca-roots
  mountPath: /etc/osm/ca-roots
  readOnly: true
- name: ca-bootstrap-token
  mountPath: /var/run/secrets/openservicemesh.io/cert-authority
  readOnly: true
{{- end }}

{{/*
The roots that verify the CA's serving certificate: global.caRoots.pem
(rendered into the ConfigMap osm-ca-roots; required with Vault), else the
certificate of the built-in root Secret (only its ca.crt key is projected,
never the key; the kubelet waits until the CA has created the Secret).
*/}}
{{- define "osm.caClientVolumes" -}}
- name: ca-roots
  {{- if .ctx.Values.global.caRoots.pem }}
  configMap:
    name: osm-ca-roots
    items:
      - key: ca.crt
        path: ca.crt
  {{- else }}
  secret:
    secretName: {{ .ctx.Values.global.certAuthority.rootSecret }}
    items:
      - key: ca.crt
        path: ca.crt
  {{- end }}
- name: ca-bootstrap-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .ctx.Values.global.certAuthority.tokenAudience }}
          expirationSeconds: 3600
          path: token
{{- end }}

{{/* osm.pdb: the component's PodDisruptionBudget, when pdb.enabled. */}}
{{- define "osm.pdb" -}}
{{- $pdb := .ctx.Values.pdb -}}
{{- if $pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "osm.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "osm.labels" . | nindent 4 }}
spec:
  {{- if hasKey $pdb "maxUnavailable" }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "osm.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* osm.serviceAccount: the component's own ServiceAccount. */}}
{{- define "osm.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "osm.name" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "osm.labels" . | nindent 4 }}
automountServiceAccountToken: {{ .automount }}
{{- end }}
