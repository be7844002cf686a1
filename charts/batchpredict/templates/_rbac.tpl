{{/*
The operator's permissions, as rule lists shared by the cluster-wide (ClusterRole) and the
namespaced (Role per watched namespace) modes. No wildcards: every verb is one the code uses.
*/}}

{{/* Application: what batchpredict itself reads and writes in the watched namespaces. */}}
{{- define "batchpredict.rbac.applicationRules" -}}
# The runs: watched (kopf), patched for finalizers/annotations, and deleted once
# spec.ttlSecondsAfterFinished has passed (their Jobs and pods follow by owner reference).
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictions"]
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictions/status"]
  verbs: ["get", "patch", "update"]
# Progress reports the workers write; the operator reads them and cleans them up.
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictionshards"]
  verbs: ["get", "list", "watch", "delete"]
# The plan, shard and finalize Indexed Jobs of each run (owned by the BatchPrediction).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Worker pods: their phases, exit codes and termination messages feed the status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The worker ServiceAccount the operator creates in a run's namespace...
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
# ...and binds to the worker ClusterRole there (a RoleBinding).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["get", "create"]
# Binding a ClusterRole needs `bind` on it (or every permission it grants): this one only.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["bind"]
  resourceNames: [{{ include "batchpredict.workerClusterRole" . | quote }}]
{{- end }}

{{/* Framework: what kopf needs in the watched namespaces. */}}
{{- define "batchpredict.rbac.frameworkRules" -}}
# Events kopf and the operator post about each run (both Event APIs).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Framework, cluster-scoped reads: kopf discovers CRDs and (namespaced mode) namespaces. */}}
{{- define "batchpredict.rbac.frameworkClusterRules" -}}
# kopf waits for the CRDs it serves and notices when they change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# kopf resolves the namespaces it serves (it falls back to assuming they exist, with a warning).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
