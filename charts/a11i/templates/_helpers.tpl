{{- /*
Names, labels, images, the Redis URL and the settings checks shared by the templates.
Only helpers here: nothing in this file renders an object.
*/ -}}

{{/* "<release>-<suffix>", cut to the 63 characters of a DNS label. */}}
{{- define "a11i.name" -}}
{{- printf "%s-%s" .root.Release.Name .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels every object carries; `component` names the part. */}}
{{- define "a11i.labels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels a component's pods are selected by (never changed by an upgrade). */}}
{{- define "a11i.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag of image.operator / image.sidecar; the tag defaults to the appVersion. */}}
{{- define "a11i.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "a11i.webhookTLSSecret" -}}
{{- if .Values.webhook.tls.secretName -}}
{{- .Values.webhook.tls.secretName -}}
{{- else -}}
{{- include "a11i.name" (dict "root" . "suffix" "webhook-tls") -}}
{{- end -}}
{{- end -}}

{{/* The DNS names the webhook Service answers to, which its certificate must carry. */}}
{{- define "a11i.webhookDNSNames" -}}
{{- $service := include "a11i.name" (dict "root" . "suffix" "webhook") -}}
{{- $ns := .Release.Namespace -}}
{{- list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns) | toJson -}}
{{- end -}}

{{/*
The Redis the operator and the sidecars share: redis.url, or the bundled one's Service by its
namespace-qualified name (the sidecars run in other namespaces). Exactly one must be chosen.
*/}}
{{- define "a11i.redisURL" -}}
{{- $redis := .Values.redis -}}
{{- if and $redis.existingSecret (or $redis.enabled $redis.url) -}}
{{- fail "redis.existingSecret is set with redis.enabled or redis.url: choose one Redis. redis.existingSecret names a Secret (key url) of an external Redis; set redis.enabled=false and leave redis.url empty with it." -}}
{{- else if $redis.existingSecret -}}
{{- printf "(from Secret %s, key url)" $redis.existingSecret -}}
{{- else if and $redis.enabled $redis.url -}}
{{- fail "redis.enabled is true and redis.url is set: choose one Redis. For an external Redis set redis.enabled=false and redis.url=redis://HOST:6379/0; for the bundled one leave redis.url empty." -}}
{{- else if $redis.url -}}
{{- $redis.url -}}
{{- else if $redis.enabled -}}
{{- printf "redis://%s.%s.svc:%d/0" (include "a11i.name" (dict "root" . "suffix" "redis")) .Release.Namespace (int $redis.service.port) -}}
{{- else -}}
{{- fail "a11i needs a Redis for the namespaces' shared wallets: set redis.enabled=true (a single-replica Redis in the release's namespace) or redis.url=redis://HOST:6379/0 (an external one)." -}}
{{- end -}}
{{- end -}}

{{/*
The Secret (in the release's namespace, key "url") the Redis URL comes from when it carries a
password: the bundled Redis with redis.auth.enabled, or redis.existingSecret. Empty: the URL is
plain (redis.url, or the bundled Redis without a password).
*/}}
{{- define "a11i.redisSecret" -}}
{{- $redis := .Values.redis -}}
{{- if $redis.existingSecret -}}
{{- $redis.existingSecret -}}
{{- else if and $redis.enabled $redis.auth.enabled -}}
{{- include "a11i.name" (dict "root" . "suffix" "redis") -}}
{{- end -}}
{{- end -}}

{{/* The A11I_REDIS_URL env entry of the operator and the dashboard (a list item). */}}
{{- define "a11i.redisEnv" -}}
{{- $secret := include "a11i.redisSecret" . -}}
- name: A11I_REDIS_URL
{{- if $secret }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: url
{{- else }}
  value: {{ include "a11i.redisURL" . | quote }}
{{- end }}
{{- include "a11i.redisModeEnv" . }}
{{- with .Values.redis.sentinel }}
{{- if and (eq $.Values.redis.mode "sentinel") .existingSecret }}
- name: A11I_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey | default "password" }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A11I_REDIS_MODE (and the sentinels' master name) for whoever reaches Redis or passes it
on to the sidecars; nothing for a standalone Redis (list items). */}}
{{- define "a11i.redisModeEnv" -}}
{{- $redis := .Values.redis -}}
{{- if ne ($redis.mode | default "standalone") "standalone" }}
- name: A11I_REDIS_MODE
  value: {{ $redis.mode | quote }}
{{- if eq $redis.mode "sentinel" }}
- name: A11I_REDIS_MASTER
  value: {{ $redis.sentinel.master | default "mymaster" | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secret the operator keeps in every agent namespace for the sidecars (key A11I_REDIS_URL). */}}
{{- define "a11i.sidecarRedisSecret" -}}a11i-sidecar-redis{{- end -}}

{{/* Checks of settings that depend on each other (the schema checks each one alone). */}}
{{- define "a11i.validate" -}}
{{- $webhook := .Values.webhook -}}
{{- if and $webhook.certManager.enabled $webhook.tls.secretName -}}
{{- fail "webhook.certManager.enabled and webhook.tls.secretName are both set: choose one source of the webhook's certificate." -}}
{{- end -}}
{{- if and $webhook.tls.secretName (not $webhook.caBundle) (not $webhook.certManager.enabled) -}}
{{- fail "webhook.tls.secretName is set but webhook.caBundle is empty: the API server must be given the CA (base64 PEM) that signed the certificate in that Secret." -}}
{{- end -}}
{{- $_ := include "a11i.redisURL" . -}}
{{- if and .Values.redis.enabled (ne (.Values.redis.mode | default "standalone") "standalone") -}}
{{- fail (printf "redis.mode=%s needs an external Redis: the bundled one is a single server. Set redis.enabled=false and redis.url (or redis.existingSecret) to your %s." .Values.redis.mode (ternary "Redis Cluster's nodes" "sentinels" (eq .Values.redis.mode "cluster"))) -}}
{{- end -}}
{{- $custody := .Values.injection.keyCustody -}}
{{- if and $custody.secretName (not $custody.openaiKey) (not $custody.anthropicKey) -}}
{{- fail "injection.keyCustody.secretName is set but neither openaiKey nor anthropicKey: name the key of the Secret that holds each provider's API key, e.g. --set injection.keyCustody.openaiKey=openai" -}}
{{- end -}}
{{- if and (not $custody.secretName) (or $custody.openaiKey $custody.anthropicKey) -}}
{{- fail "injection.keyCustody.openaiKey/anthropicKey are set but secretName is empty: name the Secret (in each agent pod's namespace) that holds the keys" -}}
{{- end -}}
{{- $dashboard := .Values.dashboard -}}
{{- if and $dashboard.enabled (not $dashboard.auth.kubernetes) (not $dashboard.auth.tokens) -}}
{{- fail "dashboard.enabled with neither dashboard.auth.kubernetes nor dashboard.auth.tokens: the dashboard can stop every agent and never runs without auth in a cluster. Turn on at least one." -}}
{{- end -}}
{{- end -}}

{{/* The containers' security context: non-root, read-only, no privileges. */}}
{{- define "a11i.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
