{{- /*
osm.xdsEdge.deployment: an edge Deployment. The dict holds "ctx", "track"
(stable or canary: the label osm.openservicemesh.io/track, part of the
selector, so the two Deployments never select each other's pods while the
ADS Service, which ignores it, selects both), "name", "replicas" (nil: left
to the HPA), "image" (nil: xdsEdge.image) and "resources".
*/ -}}
{{- define "osm.xdsEdge.deployment" -}}
{{- $ctx := .ctx -}}
{{- $c := dict "ctx" .ctx "component" "xds-edge" "image" .image -}}
{{- $g := $ctx.Values.global -}}
{{- $l := $ctx.Values.limits -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "osm.labels" $c | nindent 4 }}
    osm.openservicemesh.io/track: {{ .track }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "osm.selectorLabels" $c | nindent 6 }}
      osm.openservicemesh.io/track: {{ .track }}
  template:
    metadata:
      labels:
        {{- include "osm.labels" $c | nindent 8 }}
        osm.openservicemesh.io/track: {{ .track }}
      annotations:
        {{- include "osm.podAnnotations" $c | nindent 8 }}
    spec:
      serviceAccountName: osm-xds-edge
      # The edge makes no Kubernetes API call: no token.
      automountServiceAccountToken: false
      securityContext:
        {{- include "osm.podSecurityContext" $c | nindent 8 }}
      {{- with include "osm.scheduling" $c | trim }}{{ . | nindent 6 }}{{ end }}
      {{- if $ctx.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: {{ $ctx.Values.topologySpread.maxSkew }}
          topologyKey: {{ $key }}
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "osm.selectorLabels" $c | nindent 14 }}
        {{- end }}
      {{- end }}
      containers:
        - name: xds-edge
          image: {{ include "osm.image" $c }}
          imagePullPolicy: {{ $g.image.pullPolicy }}
          args:
            {{- include "osm.adminArgs" $c | nindent 12 }}
            {{- include "osm.meshArgs" (dict "ctx" $ctx "flags" (list "trust-domain")) | trim | nindent 12 }}
            {{- include "osm.natsArgs" (dict "ctx" $ctx "role" "edge") | trim | nindent 12 }}
            {{- include "osm.caClientArgs" $c | nindent 12 }}
            - --listen-addr=:15128
            - --max-streams-per-conn={{ $l.maxStreamsPerConn }}
            - --stream-rate={{ $l.streamRate }}
            - --stream-burst={{ $l.streamBurst }}
            - --max-connection-age={{ $l.maxConnectionAge }}
            - --max-connection-age-grace={{ $l.maxConnectionAgeGrace }}
            - --keepalive-time={{ $l.keepaliveTime }}
            - --keepalive-timeout={{ $l.keepaliveTimeout }}
            - --ack-status-interval={{ $ctx.Values.ackStatusInterval }}
            {{- /* 0s is the edge's default: left out, so that an older edge image, which refuses 0s, takes its own. */}}
            {{- if not (has (toString $ctx.Values.certTTL) (list "0s" "0" "")) }}
            - --cert-ttl={{ $ctx.Values.certTTL }}
            {{- end }}
            {{- if $ctx.Values.debug.enabled }}
            - --debug-addr=:{{ $ctx.Values.debug.port }}
            {{- end }}
          env:
            {{- include "osm.podNameEnv" $c | nindent 12 }}
            {{- include "osm.natsEnv" (dict "ctx" $ctx "role" "edge") | trim | nindent 12 }}
            # The MeshConfig the edge follows (--namespace, --mesh-config), as
            # variables: an edge image from before it followed one ignores
            # them, where the flags would stop it (a rollback or canary of
            # an older xdsEdge.image.tag under this chart).
            - name: OSM_NAMESPACE
              value: {{ $ctx.Release.Namespace | quote }}
            - name: OSM_MESH_CONFIG
              value: {{ $g.meshConfigName | quote }}
          ports:
            {{- include "osm.adminPort" $c | nindent 12 }}
            - name: ads
              containerPort: 15128
              protocol: TCP
            {{- if $ctx.Values.debug.enabled }}
            # The debug API osm proxy reads over a port-forward: mutual
            # TLS, the operator's certificate only.
            - name: debug
              containerPort: {{ $ctx.Values.debug.port }}
              protocol: TCP
            {{- end }}
          {{- include "osm.probes" $c | nindent 10 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- include "osm.containerSecurityContext" $c | nindent 12 }}
          volumeMounts:
            {{- include "osm.natsVolumeMount" $c | nindent 12 }}
            {{- include "osm.caClientVolumeMounts" $c | nindent 12 }}
      volumes:
        {{- include "osm.natsVolume" $c | nindent 8 }}
        {{- include "osm.caClientVolumes" $c | nindent 8 }}
{{- end }}
