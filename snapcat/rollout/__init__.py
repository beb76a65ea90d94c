"""Rolling new model versions out to the KServe InferenceService: canary, analyze, promote, rollback.

The InferenceService (``snapcat/data/kserve/inferenceservice.yaml``, included by ``manifests/base``) runs in KServe's Knative mode, where
every change of a component's pod template makes a new revision and
``spec.<component>.canaryTrafficPercent`` splits traffic between that latest revision and the last
one that had taken 100% (KServe's "Canary Rollout"). One job per module:

- :mod:`~snapcat.rollout.isvc`: the object's names and the parts of it a rollout reads;
- :mod:`~snapcat.rollout.render`: the InferenceService ``manifests/base`` deploys, from Python;
- :mod:`~snapcat.rollout.bodies`: the patch/PUT bodies and the :class:`Request` carrying one;
- :mod:`~snapcat.rollout.cluster`: the Kubernetes calls (KServe SDK, or the bare kubernetes client);
- :mod:`~snapcat.rollout.waiting`: the conditions each action waits for, and the polling loop;
- :mod:`~snapcat.rollout.apply` and :mod:`~snapcat.rollout.actions`: one skeleton runs every
  write; canary, promote, rollback and status;
- :mod:`~snapcat.rollout.status`: readiness and the status summary (data and text);
- :mod:`~snapcat.rollout.analysis` / :mod:`~snapcat.rollout.prometheus`: the automatic canary
  decision from live metrics;
- :mod:`~snapcat.rollout.pipeline`: the pipeline's deploy step.

Every action builds its request first: with ``dry_run=True`` nothing contacts a cluster and the
result's ``yaml`` is the exact body that would be sent. Nothing here parses command lines; the CLI
(``snapcat rollout``) and the pipeline's deploy step both call these functions.
"""

from snapcat.rollout.actions import canary, production_model_uri, promote, rollback, status
from snapcat.rollout.analysis import Decision, Thresholds, analyze, decide
from snapcat.rollout.apply import DEFAULT_POLL, DEFAULT_TIMEOUT, Options, Plan, RolloutResult
from snapcat.rollout.auto import AutoAnalysis, AutoResult, auto_canary
from snapcat.rollout.bodies import Request, canary_patch, promote_body, rollback_patch, to_yaml
from snapcat.rollout.cluster import Cluster
from snapcat.rollout.isvc import (
    API_VERSION,
    COMPONENTS,
    DEFAULT_NAME,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    RolloutError,
    RolloutTimeout,
    canary_percent_of,
    check_model_uri,
    isvc_path,
    model_uri_of,
    rollout_components,
)
from snapcat.rollout.pipeline import deploy_canary, kserve_storage_uri
from snapcat.rollout.prometheus import Prometheus
from snapcat.rollout.render import (
    SERVE_IMAGE_REPOSITORY,
    TF_SERVING_VERSION,
    render_inferenceservice,
    serve_image,
)
from snapcat.rollout.status import format_status, is_ready, summarize
from snapcat.rollout.waiting import (
    all_traffic_to_latest,
    canary_ready,
    traffic_pinned_to_previous,
    wait_for,
)

__all__ = [
    "API_VERSION", "AutoAnalysis", "AutoResult", "Decision", "Thresholds", "analyze", "auto_canary", "decide", "COMPONENTS", "DEFAULT_NAME", "DEFAULT_POLL", "DEFAULT_TIMEOUT", "GROUP", "KIND",
    "PLURAL", "Prometheus", "SERVE_IMAGE_REPOSITORY", "TF_SERVING_VERSION", "VERSION", "Cluster", "Options", "Plan",
    "Request", "RolloutError", "RolloutResult", "RolloutTimeout", "all_traffic_to_latest",
    "canary", "canary_patch", "canary_percent_of", "canary_ready", "check_model_uri",
    "deploy_canary", "format_status", "is_ready", "isvc_path", "kserve_storage_uri",
    "model_uri_of", "production_model_uri", "promote", "promote_body", "render_inferenceservice", "rollback",
    "rollback_patch", "serve_image", "status", "summarize", "to_yaml", "traffic_pinned_to_previous",
    "rollout_components", "wait_for",
]  # fmt: skip
