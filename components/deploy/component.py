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
):
    """Calls the same rollout code as ``snapcat rollout canary``; the object or patch it sends
    (or would send, with ``dry_run``) is kept as the ``manifest`` artifact."""
    import pathlib

    from snapcat import rollout

    text = rollout.deploy_canary(
        name=isvc_name,
        namespace=isvc_namespace,
        model_uri=rollout.kserve_storage_uri(model.uri),
        percent=canary_percent,
        dry_run=dry_run,
    )
    pathlib.Path(manifest.path).write_text(text, "utf-8")
    manifest.metadata.update(dry_run=dry_run, storage_uri=rollout.kserve_storage_uri(model.uri))


def build(image: str):
    return dsl.component(deploy, base_image=image, install_kfp_package=False)
