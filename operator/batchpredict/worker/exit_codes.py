"""Exit codes of `batchpredict-worker`; the operator maps them in the Job's podFailurePolicy."""

from __future__ import annotations

# The role finished: for a shard, every item is committed as a prediction or a failure.
OK = 0
# Usage error (bad command line); never produced by a correctly built Job.
USAGE = 2
# The role cannot start: invalid spec, dataset missing, model missing or not ready, output
# location not writable.
# Retrying the pod does not help; the operator fails the run with the reported reason.
CANNOT_START = 3
# The role broke part-way (crash, storage error). Retrying the pod resumes where it stopped.
BROKEN = 4
# A dependency (Triton) stayed unreachable for spec.stallTimeoutSeconds while the pod waited
# for it. Retrying the pod at once would only wait again: the index fails, and the operator's
# next round (after its backoff) tries the shard's items again.
UNAVAILABLE = 5

# Reasons in the plan step's termination message and in CannotStart errors.
REASON_DATASET_NOT_FOUND = "DatasetNotFound"
REASON_MODEL_NOT_FOUND = "ModelNotFound"
REASON_MODEL_NOT_READY = "ModelNotReady"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_PLAN_NOT_FOUND = "PlanNotFound"
REASON_OUTPUT_NOT_WRITABLE = "OutputNotWritable"
REASON_TRITON_UNAVAILABLE = "TritonUnavailable"
