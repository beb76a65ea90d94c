"""The rollout actions: canary, promote, rollback (writes, each a :class:`Plan` run by
:func:`snapcat.rollout.apply.apply`) and status (a read).

- :func:`canary` merge-patches the predictor's ``storageUri`` with its ``canaryTrafficPercent``
  (one URI: the transformer reads no model files); if the new revision never becomes ready it
  rolls back on its own.
- :func:`promote` PUTs the object without ``canaryTrafficPercent`` (a JSON merge patch from the SDK
  cannot remove it: its model objects drop ``None``).
- :func:`rollback` patches ``canaryTrafficPercent: 0``, KServe's documented rollback.

The three take the same keyword arguments, :class:`~snapcat.rollout.apply.Options`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from snapcat.rollout.apply import NO_CLUSTER_NEEDED, Options, Plan, RolloutResult, apply
from snapcat.rollout.bodies import Request, canary_patch, promote_body, rollback_patch
from snapcat.rollout.cluster import Cluster
from snapcat.rollout.isvc import (
    RolloutError,
    canary_percent_of,
    check_model_uri,
    cpu_cores,
    isvc_path,
    model_uri_of,
    ref,
    require_knative,
    rollout_components,
)
from snapcat.rollout.status import summarize
from snapcat.rollout.waiting import (
    all_traffic_to_latest,
    canary_ready,
    failed_load,
    traffic_pinned_to_previous,
)

if TYPE_CHECKING:
    from snapcat.contract.model_info import ModelInfo

log = logging.getLogger(__name__)


def _check_same_classes(current_uri: str | None, new_uri: str) -> ModelInfo:
    """Refuses a canary that changes the class list. Labels are always right (each answer names
    its classes), but the canary analysis compares the two versions' category mixes, and an app
    may not expect a category appearing for a share of its sellers only. Returns the new model's
    info (read from its storage, as the current one's)."""
    from snapcat.contract.model_info import load_model_info

    try:
        new = load_model_info(new_uri)
        old = load_model_info(current_uri) if current_uri else None
    except Exception as exc:
        raise RolloutError(
            f"cannot compare the class lists of {current_uri} and {new_uri}: {exc}"
        ) from exc
    if old is not None and old.classes != new.classes:
        raise RolloutError(
            f"{new_uri} has a different class list than {current_uri}: a canary would mix "
            "transformers and predictors of both models; deploy it as a new InferenceService"
        )
    return new


def _warn_if_threads_sized_for_another_backbone(live: dict, model_uri: str, backbone: str) -> None:
    """A model of another backbone than the one the predictor's TF Serving threads were sized for
    still serves correctly, at that sizing's price (e.g. Xception on the CPU tier's one intra-op
    thread: the same CPU, about 1.8x the latency; Lite0 on a big backbone's: about 1.5x the CPU).
    Worth a warning, not a refusal."""
    from snapcat.contract.tf_serving_config import SIZED_FOR_ANNOTATION, tf_serving_threads

    predictor = live["spec"]["predictor"]
    sized_for = (predictor.get("annotations") or {}).get(SIZED_FOR_ANNOTATION)
    if not sized_for or backbone == sized_for:
        return
    limit = ((predictor.get("model") or {}).get("resources") or {}).get("limits", {}).get("cpu")
    advice = ""
    if limit is not None:
        advice = f"; for {backbone} on {limit} CPUs: " + " ".join(
            tf_serving_threads(cpu_cores(limit), backbone).flags[:2]
        )
    log.warning(
        "%s is a %s model, but the predictor's TF Serving threads are sized for %s (annotation "
        "%s): it will serve, at that sizing's cost; resize the overlay's flags and annotation%s "
        '(docs/serving.md, "TF Serving\'s threads")',
        model_uri,
        backbone,
        sized_for,
        SIZED_FOR_ANNOTATION,
        advice,
    )


def _log(message: str, *args) -> bool:
    log.info(message, *args)
    return True


def _percents(live: dict) -> list[int | None]:
    return [live["spec"][c].get("canaryTrafficPercent") for c in rollout_components(live)]


def canary(
    name: str,
    namespace: str,
    model_uri: str,
    percent: int,
    *,
    check_classes: bool = False,
    **options: Any,
) -> RolloutResult:
    """Sends ``percent``% of the traffic to ``model_uri`` and waits until it is served.

    If the new revision is not ready within ``timeout`` seconds (or KServe reports that the model
    failed to load), the canary is rolled back (:func:`rollback_patch`) and RolloutError raised.
    ``options``: :class:`~snapcat.rollout.apply.Options`.
    """
    opts = Options(**options)
    check_model_uri(model_uri, local_ok=opts.dry_run)

    def plan_for(live: dict) -> Plan:
        require_knative(live)
        live_status = live.get("status") or {}
        statuses = live_status.get("components") or {}
        if live_status and not (statuses.get("predictor") or {}).get("latestRolledoutRevision"):
            raise RolloutError(
                f"{ref(live)} has no rolled-out revision yet, so there is nothing to split traffic "
                "with: wait until its first deployment is ready"
            )
        if check_classes:  # both reads need the models' storage: opt-in
            new = _check_same_classes(model_uri_of(live), model_uri)
            _warn_if_threads_sized_for_another_backbone(live, model_uri, new.backbone)
        components = rollout_components(live)
        replaced = {}
        if model_uri_of(live) != model_uri:  # a new revision is coming; the newest one is out
            replaced = {c: (statuses.get(c) or {}).get("latestCreatedRevision") for c in components}
        return Plan(
            "PATCH",
            canary_patch(live, model_uri, percent),
            what=f"canary of {model_uri}",
            until=lambda generation: canary_ready(generation, percent, components, replaced),
            vet=lambda result: _log(
                "canary: %s%% of %s/%s to %s", percent, namespace, name, model_uri
            ),
            failed=failed_load,
            recover=lambda cluster, sent, exc: _roll_back_after(
                cluster, name, namespace, sent, exc
            ),
        )

    return apply("canary", name, namespace, plan_for, opts)


def _roll_back_after(
    cluster: Cluster, name: str, namespace: str, sent: dict, failure: RolloutError
) -> RolloutError:
    body = rollback_patch(sent)
    try:
        cluster.patch(name, namespace, body)
    except RolloutError as exc:
        return RolloutError(f"{failure}; the automatic rollback failed too: {exc}")
    previous = (((sent.get("status") or {}).get("components") or {}).get("predictor") or {}).get(
        "latestRolledoutRevision"
    )
    where = f" ({previous})" if previous else ""
    return RolloutError(
        f"{failure}. Rolled back: canaryTrafficPercent is 0, all traffic goes to the previous "
        f"revision{where}"
    )


def promote(
    name: str, namespace: str, *, model_uri: str | None = None, **options: Any
) -> RolloutResult:
    """Gives the canary all traffic. With ``model_uri``, refuses unless that is the canary's model."""
    opts = Options(**options)
    if model_uri is not None:
        check_model_uri(model_uri, local_ok=opts.dry_run)

    def plan_for(live: dict) -> Plan:
        if model_uri is not None and model_uri_of(live) != model_uri:
            raise RolloutError(
                f"{ref(live)} is rolling out {model_uri_of(live)}, not {model_uri}; nothing promoted"
            )

        def vet(result: RolloutResult) -> bool:
            percents = _percents(live)
            if all(p is None for p in percents):
                result.messages.append("no canary in progress: nothing to promote")
                return False
            if any(p == 0 for p in percents):
                raise RolloutError(
                    f"{ref(live)}: the canary of {model_uri_of(live)} was rolled back "
                    "(canaryTrafficPercent 0); start a new canary before promoting"
                )
            statuses = (live.get("status") or {}).get("components") or {}
            for c in rollout_components(live):
                comp = statuses.get(c) or {}
                if comp.get("latestCreatedRevision") != comp.get("latestReadyRevision"):
                    raise RolloutError(
                        f"{ref(live)}: the {c} canary revision {comp.get('latestCreatedRevision')} "
                        "is not ready; nothing promoted (see `snapcat rollout status`)"
                    )
            log.info("promote: %s/%s serves %s to all traffic", namespace, name, model_uri_of(live))
            return True

        return Plan(
            "PUT",
            promote_body(live),
            what=f"promotion of {model_uri_of(live)}",
            until=lambda generation: all_traffic_to_latest(generation, rollout_components(live)),
            vet=vet,
        )

    return apply("promote", name, namespace, plan_for, opts, offline_uri=model_uri)


def rollback(name: str, namespace: str, **options: Any) -> RolloutResult:
    """Pins all traffic to the previously rolled-out revisions (``canaryTrafficPercent: 0``)."""

    def plan_for(live: dict) -> Plan:
        require_knative(live)

        def vet(result: RolloutResult) -> bool:
            percents = _percents(live)
            if all(p == 0 for p in percents):
                result.messages.append("already rolled back: canaryTrafficPercent is 0")
            elif all(p is None for p in percents):
                raise RolloutError(
                    f"{ref(live)} has no canary in progress: its latest revision already has all "
                    "traffic. To go back to an earlier model, run a canary of that model's URI "
                    "and promote it"
                )
            log.info("rollback: %s/%s pins traffic to the previous revision", namespace, name)
            return True

        return Plan(
            "PATCH",
            rollback_patch(live),
            what="rollback",
            until=lambda generation: traffic_pinned_to_previous(
                generation, rollout_components(live)
            ),
            vet=vet,
        )

    return apply("rollback", name, namespace, plan_for, Options(**options))


def status(
    name: str,
    namespace: str,
    *,
    dry_run: bool = False,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> RolloutResult:
    """Reads the InferenceService (or summarizes ``current``) without changing anything."""
    request = Request("GET", isvc_path(name, namespace))
    result = RolloutResult("status", name, namespace, request, dry_run=dry_run)
    if current is not None:
        result.status = summarize(current)
    elif not dry_run:
        if cluster is None:
            cluster = Cluster.connect(kubeconfig, context, offline=NO_CLUSTER_NEEDED)
        result.status = summarize(cluster.get(name, namespace))
    return result


def production_model_uri(
    name: str,
    namespace: str,
    *,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> str:
    """The storageUri the live InferenceService serves all its traffic from: the champion a new
    candidate is evaluated against. During a canary the spec names the canary, not production,
    so that is refused rather than guessed."""
    if current is not None:
        isvc = current
    else:
        cluster = cluster if cluster is not None else Cluster.connect(kubeconfig, context)
        isvc = cluster.get(name, namespace)
    percent = canary_percent_of(isvc)
    if percent is not None and percent < 100:
        raise RolloutError(
            f"InferenceService {namespace}/{name} is running a {percent}% canary: its storageUri is "
            "the canary's; promote or roll back first, or name the production model explicitly"
        )
    uri = model_uri_of(isvc)
    if not uri:
        raise RolloutError(f"InferenceService {namespace}/{name} has no predictor storageUri")
    return uri
