{{/*
Names, labels and the image of the agentmem-operator chart.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "agentmem-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride, else the release name when it already
contains the chart name, else "<release>-<chart>". At most 63 characters (a label value).
*/}}
{{- define "agentmem-operator.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "agentmem-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pod; never change them on a live Deployment. */}}
{{- define "agentmem-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentmem-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The recommended labels every object of the chart carries. */}}
{{- define "agentmem-operator.labels" -}}
helm.sh/chart: {{ include "agentmem-operator.chart" . }}
{{ include "agentmem-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: agentmem
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels the chart adds to the CRD, next to the CRD's own (from crds/). */}}
{{- define "agentmem-operator.crdLabels" -}}
helm.sh/chart: {{ include "agentmem-operator.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "agentmem-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agentmem-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image; the tag defaults to the chart's appVersion. */}}
{{- define "agentmem-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does in each namespace it watches, derived from its code:
kopf watches AgentMemoryClusters and owned StatefulSets and keeps its bookkeeping in
annotations (patch); the reconciler (agentmem.controller._kube) reads clusters, writes
their status, applies children with server-side apply (patch, and create for new
objects), lists children to prune them, deletes pruned and retired ones, and records
Events; it reads and creates each cluster's keys and CA (Secrets), and applies the
certificate Secret it renews. Nothing else: no update or deletecollection.
*/}}
{{- define "agentmem-operator.namespacedRules" -}}
# kopf watches clusters; the reconciler reads them (from the watch, or by name).
- apiGroups: ["agentmem.io"]
  resources: ["agentmemoryclusters"]
  verbs: ["get", "list", "watch"]
# Status is written through the status subresource (JSON merge patch).
- apiGroups: ["agentmem.io"]
  resources: ["agentmemoryclusters/status"]
  verbs: ["patch"]
# Children name their cluster in an ownerReference with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only with this.
- apiGroups: ["agentmem.io"]
  resources: ["agentmemoryclusters/finalizers"]
  verbs: ["update"]
# Every kind the operator makes is listed and watched (only objects labelled
# app.kubernetes.io/managed-by=agentmem-operator): reconciles read them from memory.
# The directory and auth ConfigMaps are read and applied.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Client, router and shard Services: applied, and deleted when pruned or retired.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Each cluster's keys and CA (<cluster>-auth, -audit, -ca): read, and created once;
# its certificate (<cluster>-tls): applied again when it is renewed.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The nodes' ServiceAccount.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch"]
# Events about clusters (RebalancePlanned, EpochCommitted, ...) and kopf's warnings.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# The memory-node and router pods (only the operator's, by label) are watched to ask
# each, by its address, how far it is: the warm-up handshake of a rebalance, the
# epoch before a shard retires, and the event lag in status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Shard StatefulSets (watched for pod readiness): applied, deleted.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The router Deployment.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# A PodDisruptionBudget per shard.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The nodes' NetworkPolicy.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The event topic in strimzi mode: applied and read for its Ready condition, never deleted.
- apiGroups: ["kafka.strimzi.io"]
  resources: ["kafkatopics"]
  verbs: ["get", "list", "watch", "create", "patch"]
# ServiceMonitor and PrometheusRule, when the Prometheus Operator's API is served.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}

{{/*
Cluster-scoped reads kopf makes to follow the cluster's API: it watches CRDs (to
notice the AgentMemoryCluster CRD change) and, when it watches listed namespaces,
the Namespaces (to notice them come and go). Without them it retries 403s in a loop.
*/}}
{{- define "agentmem-operator.discoveryRules" -}}
# The API server's service-account issuer and keys, which the operator publishes to the
# nodes (the auth ConfigMap) so that projected service-account tokens are verified.
- nonResourceURLs: ["/.well-known/openid-configuration", "/openid/v1/jwks"]
  verbs: ["get"]
# kopf follows CRDs, to notice the AgentMemoryCluster CRD change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# kopf follows the watched namespaces, to notice them come and go.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
