{{/*
The operator's permissions, as rule lists shared by the cluster-wide (ClusterRole) and the
namespaced (Role per watched namespace) modes. No wildcards: every verb is one the code uses.
*/}}

{{/* Application: what batchpredict itself reads and writes in the watched namespaces. */}}
{{- define "batchpredict.rbac.applicationRules" -}}
# The runs: watched (kopf lists and watches), patched (kopf's bookkeeping annotations), and
# deleted once spec.ttlSecondsAfterFinished has passed (their Jobs and pods follow by owner
# reference). Never `get` (the watch has them) nor `update` (every write is a patch).
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictions"]
  verbs: ["list", "watch", "patch", "delete"]
# Status is computed and written as a patch of the status subresource.
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictions/status"]
  verbs: ["patch"]
# Progress reports the workers write: the operator reads them (an index of a watch) and
# deletes a finished run's once its counts are in the run's status.
- apiGroups: ["batchpredict.io"]
  resources: ["batchpredictionshards"]
  verbs: ["list", "watch", "delete"]
# The plan, shard and finalize Jobs of each run (owned by the BatchPrediction, so they go with
# it: the operator never deletes one); patched for suspend and parallelism.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch"]
# Worker pods: their phases, exit codes and termination messages feed the status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The worker ServiceAccount the operator creates in a run's namespace (a create that finds it
# there is fine: no `get`)...
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create"]
# ...and binds to the worker ClusterRole there (a RoleBinding).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["create"]
# Binding a ClusterRole needs `bind` on it (or every permission it grants): this one only.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  verbs: ["bind"]
  resourceNames: [{{ include "batchpredict.workerClusterRole" . | quote }}]
{{- if .Values.kueue.enabled }}
# Kueue's Workloads (kueue.enabled): watched for a queued run's queue position, and patched
# (spec.active) to suspend or resume a queued run, since Kueue owns its Job's suspend.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* Framework: what kopf needs in the watched namespaces. */}}
{{- define "batchpredict.rbac.frameworkRules" -}}
# Events kopf and the operator post about each run (kopf creates core v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Framework, cluster-scoped reads: kopf discovers CRDs and (namespaced mode) namespaces. */}}
{{- define "batchpredict.rbac.frameworkClusterRules" -}}
# kopf waits for the CRDs it serves and notices when they change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# kopf resolves the namespaces it serves (it falls back to assuming they exist, with a warning).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
