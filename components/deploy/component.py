"""Deploy: a blessed Model -> a canary of the InferenceService (or, dry-run, the manifest only)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output


def deploy(
    model: Input[Model],
    isvc_name: str,
    isvc_namespace: str,
    canary_percent: int,
    dry_run: bool,
    manifest: Output[Artifact],
    canary_auto: bool = False,
    prometheus_url: str = "",
    # a literal: KFP ships this function's source; tests/pipelines/test_pipeline.py checks it
    # against snapcat.rollout.analysis.DEFAULT_WINDOW
    analysis_window: str = "10m",
    analysis_timeout: float = 3600.0,
    max_analysis_timeout: float = 3600.0,
    analysis_interval: float = 60.0,
    ready_timeout: float = 600.0,
):
    """Calls the same rollout code as ``snapcat rollout canary``; the object or patch it sends
    (or would send, with ``dry_run``) is kept as the ``manifest`` artifact. With ``canary_auto``
    the canary is judged on live metrics from ``prometheus_url`` (default thresholds, see
    ``snapcat rollout analyze``) and promoted or rolled back, as ``--auto`` does.

    The step's deadline was compiled from ``ready_timeout`` (each readiness wait),
    ``max_analysis_timeout`` and ``analysis_interval``; a run asking for a longer analysis is
    refused here, before any canary exists, instead of being killed mid-analysis with the canary
    left at its share of traffic."""
    import pathlib

    from snapcat import rollout

    if canary_auto and analysis_timeout > max_analysis_timeout:
        raise rollout.RolloutError(
            f"analysis_timeout {analysis_timeout:g} s is longer than the {max_analysis_timeout:g} s "
            "this pipeline was compiled to wait for (the deploy step's deadline); compile it with "
            "a longer --analysis-timeout or ask for less"
        )

    auto = None
    if canary_auto:
        from snapcat.contract.model_info import load_model_info

        auto = rollout.AutoAnalysis(
            prometheus_url=prometheus_url,
            window=analysis_window,
            timeout=analysis_timeout,
            interval=analysis_interval,
            canary_version=str(load_model_info(model.path).version),
        )
    text = rollout.deploy_canary(
        name=isvc_name,
        namespace=isvc_namespace,
        model_uri=rollout.kserve_storage_uri(model.uri),
        percent=canary_percent,
        dry_run=dry_run,
        auto=auto,
        timeout=ready_timeout,
    )
    pathlib.Path(manifest.path).write_text(text, "utf-8")
    manifest.metadata.update(
        dry_run=dry_run, canary_auto=canary_auto, storage_uri=rollout.kserve_storage_uri(model.uri)
    )


def build(image: str):
    return dsl.component(deploy, base_image=image, install_kfp_package=False)
