{{- define "hv.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hv.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hv.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hyperion-vault
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "api") */}}
{{- define "hv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hv.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hv.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "hv.controllerName" -}}{{ include "hv.fullname" . }}-controller{{- end -}}
{{- define "hv.apiName" -}}{{ include "hv.fullname" . }}-api{{- end -}}

{{/* Fail early on settings that cannot work, with a message naming the value. */}}
{{- define "hv.validate" -}}
{{- if not .Values.database.existingSecret -}}
{{- fail "database.existingSecret is required: the name of a Secret with keys hosts, user, password, dbname" -}}
{{- end -}}
{{- if and (eq .Values.kms.mode "aws") (not .Values.kms.keyId) -}}
{{- fail "kms.keyId is required when kms.mode is aws" -}}
{{- end -}}
{{- if and (eq .Values.kms.mode "local") (not .Values.kms.localKeysSecret) -}}
{{- fail "kms.localKeysSecret is required when kms.mode is local (an ephemeral key would lose every secret on restart)" -}}
{{- end -}}
{{- end -}}

{{/* Database and KMS settings of one component: include with (dict "ctx" $ "secret" <db Secret name>). */}}
{{- define "hv.storeEnv" -}}
{{- $secret := .secret }}
{{- with .ctx }}
- name: VAULT_PG_HOSTS
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: hosts}}
- name: VAULT_PG_PORT
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: port, optional: true}}
- name: VAULT_PG_USER
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: user}}
- name: VAULT_PG_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: password}}
- name: VAULT_PG_DBNAME
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: dbname}}
- name: VAULT_PG_SSLMODE
  value: {{ .Values.database.sslMode | quote }}
{{- if eq .Values.database.sslMode "verify-full" }}
- name: VAULT_PG_SSLROOTCERT
  value: /etc/hyperion-vault/pg-ca/ca.crt
{{- end }}
- name: VAULT_PG_POOL_SIZE
  value: {{ .Values.database.poolSize | quote }}
- name: VAULT_KMS_MODE
  value: {{ .Values.kms.mode | quote }}
{{- if eq .Values.kms.mode "aws" }}
- name: VAULT_KMS_KEY_ID
  value: {{ .Values.kms.keyId | quote }}
{{- with .Values.kms.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kms.endpoint }}
- name: VAULT_KMS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- else }}
- name: VAULT_LOCAL_MASTER_KEYS
  valueFrom: {secretKeyRef: {name: {{ .Values.kms.localKeysSecret }}, key: keys}}
{{- end }}
- name: VAULT_DEK_CACHE_TTL_SECS
  value: {{ .Values.kms.dekCacheTtlSeconds | quote }}
- name: VAULT_KMS_MAX_RETRIES
  value: {{ .Values.kms.maxRetries | quote }}
{{- end }}
{{- end -}}

{{- define "hv.storeVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .Values.database.sslMode "verify-full" }}
- name: pg-ca
  mountPath: /etc/hyperion-vault/pg-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "hv.storeVolumes" -}}
- name: tmp
  emptyDir: {sizeLimit: 16Mi}
{{- if eq .Values.database.sslMode "verify-full" }}
- name: pg-ca
  secret: {secretName: {{ .Values.database.caSecret | default .Values.database.existingSecret }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end -}}

{{- define "hv.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "hv.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
