"""Tenancy: what a run may ask for (the platform team's policy) and who started it.

Admission (the chart's ValidatingAdmissionPolicy) checks the author's own rights: each Secret
and ServiceAccount the spec names. These checks narrow that further and run in the operator
before it creates anything, so they hold where admission is missing or was bypassed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from batchpredict.api.v1alpha1.spec import BatchPredictionSpec
from batchpredict.controller.config import OperatorConfig, TenancyPolicy
from batchpredict.reconcile.naming import ANNOTATION_STARTED_BY

UNVERIFIED = " (unverified)"


def policy_violations(spec: BatchPredictionSpec, config: OperatorConfig) -> list[str]:
    """Each field of `spec` the operator's policy refuses, with the rule: empty when allowed."""
    policy = config.policy
    problems: list[str] = []
    images = [("spec.worker.image", spec.worker.image)]
    if spec.triton is not None and spec.triton.sidecar is not None:
        images.append(("spec.triton.sidecar.image", spec.triton.sidecar.image))
    for field, image in images:
        if image is not None and image != config.worker_image:
            problems += _image_problems(field, image, policy)
    for index, volume in enumerate(spec.worker.volumes or []):
        for kind in _volume_types(volume):
            if kind not in policy.allowed_volume_types:
                problems.append(
                    f"spec.worker.volumes[{index}].{kind}: volume type {kind} is not allowed "
                    f"(operator policy allowedVolumeTypes: {policy.allowed_volume_types})"
                )
    account = spec.worker.service_account_name
    allowed_accounts = policy.allowed_service_accounts
    if (
        account is not None
        and allowed_accounts is not None
        and account not in {*allowed_accounts, config.worker_service_account}
    ):
        problems.append(
            f"spec.worker.serviceAccountName: {account} is not allowed (operator policy "
            f"allowedServiceAccounts: {[config.worker_service_account, *allowed_accounts]})"
        )
    priority = spec.worker.priority_class_name
    allowed_priorities = policy.allowed_priority_classes
    if (
        priority is not None
        and allowed_priorities is not None
        and priority not in allowed_priorities
    ):
        problems.append(
            f"spec.worker.priorityClassName: {priority} is not allowed (operator policy "
            f"allowedPriorityClasses: {allowed_priorities})"
        )
    function = spec.input.preprocess.function if spec.input.preprocess else None
    if function is not None and not _module_allowed(function, policy.allowed_preprocess_modules):
        problems.append(
            f"spec.input.preprocess.function: {function} is not from an allowed module "
            f"(operator policy allowedPreprocessModules: {policy.allowed_preprocess_modules})"
        )
    return problems


def _image_problems(field: str, image: str, policy: TenancyPolicy) -> Iterator[str]:
    if not any(image.startswith(prefix) for prefix in policy.allowed_images):
        yield (
            f"{field}: {image} is not an allowed image (operator policy allowedImages: "
            f"{policy.allowed_images})"
        )
    elif policy.require_image_digest and "@sha256:" not in image:
        yield f"{field}: {image} must be pinned by digest (operator policy requireImageDigest)"


def _volume_types(volume: Mapping[str, object]) -> list[str]:
    """The source(s) of a Pod volume: every key but its name."""
    return sorted(key for key in volume if key != "name")


def _module_allowed(function: str, modules: list[str]) -> bool:
    module = function.partition(":")[0]
    return any(module == allowed or module.startswith(f"{allowed}.") for allowed in modules)


def started_by(
    recorded: str | None, annotations: Mapping[str, str], *, verified: bool
) -> str | None:
    """status.startedBy: recorded once and then kept (a later annotation never rewrites it).
    The annotation is trusted only where the admission policy guards it; otherwise it is shown
    as unverified, since anyone who may create the run could have written it."""
    if recorded:
        return recorded
    value = annotations.get(ANNOTATION_STARTED_BY)
    if not value:
        return None
    return value if verified else value + UNVERIFIED
