{{/* Names */}}
{{- define "smithers.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "smithers.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "smithers.component" -}}
{{- printf "%s-%s" (include "smithers.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "smithers.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "smithers.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "smithers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smithers.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "smithers.componentLabels" -}}
{{ include "smithers.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "smithers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "smithers.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "smithers.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "smithers.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "smithers.fullname" .) -}}
{{- else -}}
{{- required "secrets.existingSecret: name the Secret holding database-url, redis-url, jwt-secret and flower-password (or set secrets.create)" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "smithers.checks" -}}
{{- if and .Values.secrets.create (eq .Values.migrations.mode "job") -}}
{{- fail "secrets.create needs migrations.mode=initContainer: a pre-install hook Job runs before the chart's own Secret exists" -}}
{{- end -}}
{{- if not (has .Values.migrations.mode (list "job" "initContainer")) -}}
{{- fail "migrations.mode must be job or initContainer" -}}
{{- end -}}
{{- if and .Values.gateway.tls.enabled (not .Values.gateway.tls.secretName) -}}
{{- fail "gateway.tls.enabled needs gateway.tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled -}}
{{- fail "worker.autoscaling.enabled and worker.keda.enabled both scale the workers: choose one" -}}
{{- end -}}
{{- if and .Values.sandboxWorker.enabled (not .Values.sandboxWorker.docker.socket.enabled) (not .Values.sandboxWorker.docker.host) -}}
{{- fail "sandboxWorker needs a Docker engine: docker.socket.enabled or docker.host" -}}
{{- end -}}
{{- end -}}

{{/* The store and broker, from the Secret; the rest from the ConfigMap. */}}
{{- define "smithers.env" -}}
- name: SMITHERS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "smithers.secretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
- name: SMITHERS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "smithers.secretName" . }}
      key: {{ .Values.secrets.keys.redisUrl }}
{{- end -}}

{{/* Sandbox workers: a namespace, a service account and a Secret of their own. */}}
{{- define "smithers.sandboxNamespace" -}}
{{- default (printf "%s-sandbox" (default "default" .Release.Namespace)) .Values.sandboxWorker.namespace -}}
{{- end -}}

{{- define "smithers.sandboxSecretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-sandbox-secrets" (include "smithers.fullname" .) -}}
{{- else -}}
{{- required "sandboxWorker.existingSecret: name the Secret (in the sandbox namespace) holding database-url and redis-url" .Values.sandboxWorker.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "smithers.sandboxEnv" -}}
- name: SMITHERS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "smithers.sandboxSecretName" . }}
      key: {{ .Values.secrets.keys.databaseUrl }}
- name: SMITHERS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "smithers.sandboxSecretName" . }}
      key: {{ .Values.secrets.keys.redisUrl }}
{{- end -}}

{{/* A Celery worker answers a ping through the broker: (dict "node" "celery@$HOSTNAME" "probe" .probe) */}}
{{- define "smithers.workerProbe" -}}
exec:
  command: ["sh", "-c", "celery -A smithers.workers inspect ping --timeout 10 -d \"{{ .node }}\" >/dev/null"]
{{ toYaml .probe }}
{{- end -}}

{{- define "smithers.envFrom" -}}
- configMapRef:
    name: {{ include "smithers.fullname" . }}-config
{{- end -}}

{{- define "smithers.podSpecCommon" -}}
serviceAccountName: {{ include "smithers.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "smithers.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable scratch space under a read-only root filesystem. */}}
{{- define "smithers.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/smithers
{{- end -}}

{{- define "smithers.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end -}}

{{- define "smithers.migrateContainer" -}}
- name: migrate
  image: {{ include "smithers.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["migrate"]
  # Only the Secret: as a pre-install hook it runs before the chart's ConfigMap exists.
  env:
    {{- include "smithers.env" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    {{- include "smithers.scratchMounts" . | nindent 4 }}
{{- end -}}

{{- define "smithers.initContainers" -}}
{{- if eq .Values.migrations.mode "initContainer" }}
initContainers:
  {{- include "smithers.migrateContainer" . | nindent 2 }}
{{- end }}
{{- end -}}
