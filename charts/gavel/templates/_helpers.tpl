{{/* Chart name. */}}
{{- define "gavel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: <release>-<chart>, or the release name when it contains the chart name. */}}
{{- define "gavel.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "gavel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "gavel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gavel
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include "gavel.selectorLabels" (list . "bid-api") */}}
{{- define "gavel.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "gavel.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "gavel.componentLabels" -}}
{{ include "gavel.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Image reference from {repository, tag, digest}: include "gavel.image" (list . .Values.bidApi.image) */}}
{{- define "gavel.image" -}}
{{- $ctx := index . 0 -}}
{{- $img := index . 1 -}}
{{- if $img.digest -}}
{{ $img.repository }}@{{ $img.digest }}
{{- else -}}
{{ $img.repository }}:{{ $img.tag | default $ctx.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "gavel.operator.fullname" -}}
{{ include "gavel.fullname" . | trunc 54 | trimSuffix "-" }}-operator
{{- end }}

{{- define "gavel.bidApi.fullname" -}}
{{ include "gavel.fullname" . | trunc 55 | trimSuffix "-" }}-bid-api
{{- end }}

{{- define "gavel.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "gavel.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gavel.bidApi.serviceAccountName" -}}
{{- if .Values.bidApi.serviceAccount.create }}
{{- default (include "gavel.bidApi.fullname" .) .Values.bidApi.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.bidApi.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart creates for inline and dev values. */}}
{{- define "gavel.secretName" -}}
{{ include "gavel.fullname" . }}
{{- end }}

{{/* Whether the chart creates its own Secret. */}}
{{- define "gavel.createSecret" -}}
{{- if or .Values.dev.enabled .Values.redis.url .Values.database.url .Values.auth.jwt.secret .Values.auth.jwt.publicKey .Values.events.secret -}}
true
{{- end -}}
{{- end }}

{{- define "gavel.dev.redisHost" -}}
{{ include "gavel.fullname" . | trunc 57 | trimSuffix "-" }}-redis
{{- end }}

{{- define "gavel.dev.postgresqlHost" -}}
{{ include "gavel.fullname" . | trunc 52 | trimSuffix "-" }}-postgresql
{{- end }}

{{/* Environment of the connection URLs, shared by both binaries. */}}
{{- define "gavel.connectionEnv" -}}
- name: GAVEL_REDIS_URL
  valueFrom:
    secretKeyRef:
{{- if or .Values.dev.enabled .Values.redis.url }}
      name: {{ include "gavel.secretName" . }}
      key: redis-url
{{- else }}
      name: {{ required "set redis.url, redis.existingSecret or dev.enabled" .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
- name: GAVEL_DATABASE_URL
  valueFrom:
    secretKeyRef:
{{- if or .Values.dev.enabled .Values.database.url }}
      name: {{ include "gavel.secretName" . }}
      key: database-url
{{- else }}
      name: {{ required "set database.url, database.existingSecret or dev.enabled" .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end }}

{{/* Environment of the JWT verification keys (bid-api). */}}
{{- define "gavel.jwtEnv" -}}
{{- $jwt := .Values.auth.jwt -}}
{{- if or $jwt.secret $jwt.publicKey }}
{{- if $jwt.secret }}
- name: GAVEL_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "gavel.secretName" . }}
      key: jwt-secret
{{- end }}
{{- if $jwt.publicKey }}
- name: GAVEL_JWT_PUBLIC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "gavel.secretName" . }}
      key: jwt-public-key
{{- end }}
{{- else if $jwt.existingSecret }}
- name: GAVEL_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $jwt.existingSecret }}
      key: {{ $jwt.existingSecretKey }}
      optional: true
- name: GAVEL_JWT_PUBLIC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $jwt.existingSecret }}
      key: {{ $jwt.existingPublicKeyKey }}
      optional: true
{{- end }}
{{- end }}

{{/* Whether the event feed delivers (a signing secret is configured). */}}
{{- define "gavel.eventsEnabled" -}}
{{- if or .Values.events.secret .Values.events.existingSecret -}}
true
{{- end -}}
{{- end }}

{{/* Environment of the event feed's dispatcher (operator). */}}
{{- define "gavel.eventsEnv" -}}
{{- $ev := .Values.events -}}
{{- if include "gavel.eventsEnabled" . }}
- name: GAVEL_EVENTS_SECRET
  valueFrom:
    secretKeyRef:
{{- if $ev.secret }}
      name: {{ include "gavel.secretName" . }}
      key: events-secret
{{- else }}
      name: {{ $ev.existingSecret }}
      key: {{ $ev.existingSecretKey }}
{{- end }}
{{- with $ev.sink }}
- name: GAVEL_EVENTS_SINK
  value: {{ . | quote }}
{{- end }}
- name: GAVEL_EVENTS_MAX_ATTEMPTS
  value: {{ $ev.maxAttempts | quote }}
- name: GAVEL_EVENTS_BACKOFF
  value: {{ $ev.backoff | quote }}
- name: GAVEL_EVENTS_BACKOFF_MAX
  value: {{ $ev.backoffMax | quote }}
- name: GAVEL_EVENTS_TIMEOUT
  value: {{ $ev.timeout | quote }}
{{- end }}
{{- end }}

{{/* Pod security context of the Gavel binaries (distroless nonroot user). */}}
{{- define "gavel.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context meeting the "restricted" Pod Security Standard. */}}
{{- define "gavel.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Soft anti-affinity: prefer one pod of a component per node. */}}
{{- define "gavel.defaultAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gavel.selectorLabels" . | nindent 12 }}
{{- end }}

{{- define "gavel.operator.leaseName" -}}
{{ default (include "gavel.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* One NetworkPolicy egress rule: include "gavel.egressRule" (dict "to" $peers "ports" $ports "protocols" (list "TCP")) */}}
{{/* Whether the bid-api verifies tokens with an OpenID provider's keys. */}}
{{- define "gavel.oidcEnabled" -}}
{{- if or .Values.auth.oidc.issuer .Values.auth.oidc.jwksUrl }}true{{ end }}
{{- end }}

{{/* The bid-api's identity-provider and claims settings (auth.oidc). */}}
{{- define "gavel.oidcEnv" -}}
{{- $oidc := .Values.auth.oidc -}}
{{- with $oidc.issuer }}
- name: GAVEL_OIDC_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $oidc.jwksUrl }}
- name: GAVEL_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with $oidc.audience }}
- name: GAVEL_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- with $oidc.bidScope }}
- name: GAVEL_JWT_BID_SCOPE
  value: {{ . | quote }}
{{- end }}
{{- with $oidc.bidRole }}
- name: GAVEL_JWT_BID_ROLE
  value: {{ . | quote }}
{{- end }}
- name: GAVEL_JWT_SUBJECT_CLAIM
  value: {{ $oidc.subjectClaim | quote }}
- name: GAVEL_JWT_NAME_CLAIM
  value: {{ $oidc.nameClaim | quote }}
- name: GAVEL_JWT_ROLES_CLAIM
  value: {{ $oidc.rolesClaim | quote }}
- name: GAVEL_JWT_LEEWAY
  value: {{ $oidc.leeway | quote }}
- name: GAVEL_JWKS_REFRESH_INTERVAL
  value: {{ $oidc.refreshInterval | quote }}
- name: GAVEL_JWKS_MIN_REFRESH_INTERVAL
  value: {{ $oidc.minRefreshInterval | quote }}
- name: GAVEL_TOKEN_REFRESH_GRACE
  value: {{ $oidc.tokenRefreshGrace | quote }}
{{- if $oidc.caConfigMap }}
- name: GAVEL_OIDC_CA_FILE
  value: /etc/gavel/oidc-ca/{{ $oidc.caConfigMapKey }}
{{- end }}
{{- with $oidc.pageClientId }}
- name: GAVEL_OIDC_PAGE_CLIENT_ID
  value: {{ . | quote }}
- name: GAVEL_OIDC_PAGE_SCOPE
  value: {{ $oidc.pageScope | quote }}
{{- end }}
{{- with $oidc.pageResource }}
- name: GAVEL_OIDC_PAGE_RESOURCE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "gavel.egressRule" -}}
- ports:
  {{- range $port := .ports }}
  {{- range $proto := $.protocols }}
    - port: {{ $port }}
      protocol: {{ $proto }}
  {{- end }}
  {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The OTLP export's variables, on both servers, when tracing.otlpEndpoint is set. */}}
{{- define "gavel.tracingEnv" -}}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.tracing.sampleRatio | quote }}
{{- end }}
{{- end }}
