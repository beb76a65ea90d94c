"""Prepare: labelled photos (folder, manifest or bucket URI) -> split, sharded training data."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output


def prepare(
    input_uri: str,
    image_size: int,
    seed: int,
    test_fraction: float,
    validation_fraction: float,
    min_images_per_class: int,
    data_version: str,
    dataset: Output[Dataset],
    summary: Output[Markdown],
    relabel: str = "",
    exclude: str = "",
    ignore_unknown: bool = False,
):
    """Runs ``snapcat prepare`` into the Dataset artifact; its Markdown summary renders in the UI.

    ``relabel``/``exclude``: a reviewed label audit's CSVs (``snapcat prepare --relabel/--exclude``,
    docs/data.md), a path or bucket URI each; ``ignore_unknown`` rejects photos of unknown
    categories instead of failing. ``data_version`` (the fingerprint step's output) is not read
    here: it is an input so that KFP's cache key changes when the photos or the review do."""
    import pathlib

    from snapcat.dataset.prepare import PrepareConfig, run_prepare

    stats = run_prepare(
        PrepareConfig(
            input=input_uri,
            output=dataset.path,
            image_size=image_size,
            seed=seed,
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            min_images_per_class=min_images_per_class,
            relabel=relabel or None,
            exclude=exclude or None,
            ignore_unknown=ignore_unknown,
            overwrite=True,
            progress=False,
        )
    )
    pathlib.Path(summary.path).write_text(
        pathlib.Path(dataset.path, "summary.md").read_text("utf-8"), "utf-8"
    )
    dataset.metadata.update(
        classes=stats["classes"],
        accepted=stats["accepted"],
        rejected=stats["rejected"],
        duplicates=stats["duplicates"],
        image_size=stats["image_size"],
        # the review's effect, counted (the unmatched paths themselves are in the log)
        relabelled=stats["corrections"]["relabelled"],
        excluded_by_review=stats["corrections"]["excluded"],
        review_paths_not_found=len(stats["corrections"]["unmatched"]),
        data_version=data_version,
    )


def build(image: str):
    return dsl.component(prepare, base_image=image, install_kfp_package=False)
