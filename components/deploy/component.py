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
    analysis_window: str = "10m",
    analysis_timeout: float = 3600.0,
):
    """Calls the same rollout code as ``snapcat rollout canary``; the object or patch it sends
    (or would send, with ``dry_run``) is kept as the ``manifest`` artifact. With ``canary_auto``
    the canary is judged on live metrics from ``prometheus_url`` (default thresholds, see
    ``snapcat rollout analyze``) and promoted or rolled back, as ``--auto`` does."""
    import pathlib

    from snapcat import rollout

    auto = None
    if canary_auto:
        from snapcat.model_info import load_model_info

        auto = rollout.AutoAnalysis(
            prometheus_url=prometheus_url,
            window=analysis_window,
            timeout=analysis_timeout,
            canary_version=str(load_model_info(model.path).version),
        )
    text = rollout.deploy_canary(
        name=isvc_name,
        namespace=isvc_namespace,
        model_uri=rollout.kserve_storage_uri(model.uri),
        percent=canary_percent,
        dry_run=dry_run,
        auto=auto,
    )
    pathlib.Path(manifest.path).write_text(text, "utf-8")
    manifest.metadata.update(
        dry_run=dry_run, canary_auto=canary_auto, storage_uri=rollout.kserve_storage_uri(model.uri)
    )


def build(image: str):
    return dsl.component(deploy, base_image=image, install_kfp_package=False)
