{{/* The chart's name, or nameOverride. */}}
{{- define "runbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already contains the chart's name. */}}
{{- define "runbot.fullname" -}}
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

{{- define "runbot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runbot.labels" -}}
helm.sh/chart: {{ include "runbot.chart" . }}
{{ include "runbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "runbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "runbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "runbot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
What runbot does through the Kubernetes API: the driver behind the step kinds
(adapters/src/kubernetes.rs) and the usual `kubectl` / `helm` commands of team runbooks
(deploy/runbooks.example.toml). sandbox/tests/deploy_manifests.rs runs both against the
sandbox's API server and fails if a request they make is not granted by these rules, or if a
rule grants something neither makes nor the test names with its reason.
*/}}
{{- define "runbot.workloadRules" -}}
# restart: list the service's pods, read one, watch them become Ready, delete the diagnosed
# ones; restore: watch until a writer has no pods left.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Diagnosis: the (previous) container's last log lines; a Job's log, followed.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Evicting a pod honours its PodDisruptionBudget (`kubectl drain`, `kubectl evict`).
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
# Diagnosis: the pod's recent events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["get", "list", "watch"]
# Rollout status, a writer's replica count and selector; `kubectl rollout restart` patches.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
# Scaling writers to 0 and back (restore); `kubectl scale`.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
# `kubectl rollout status|history|undo` read a Deployment's ReplicaSets.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
# backup now: a Job from the backup CronJob, followed to its end.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list"]
{{- end }}

{{/* Helm's release Secrets (history, status, the revision a rollback returns to): read only. */}}
{{- define "runbot.helmSecretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list"]
{{- end }}

{{/*
An in-cluster `helm upgrade` / `helm rollback` run by runbot's deploy driver (rbac.helmDeploys):
Helm writes each revision as a Secret and marks the previous one superseded, deletes revisions
past --history-max, and applies the release's objects. Objects of kinds not listed here that
your charts render go in rbac.extraRules.
*/}}
{{- define "runbot.helmDeployRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}
