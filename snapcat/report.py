"""The evaluation report people look at: confusion matrix, training curves, error gallery.

``report.html`` is one self-contained file (images inlined as data URIs) so it renders the same
as a KFP HTML artifact, an attachment, or a file opened from a bucket.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import koreanize_matplotlib  # noqa: E402,F401  (registers the bundled NanumGothic font)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from snapcat.taxonomy import Taxonomy  # noqa: E402

_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("snapcat", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
).get_template("report.html.j2")


def plot_confusion_matrix(metrics: dict, taxonomy: Taxonomy, path: Path) -> None:
    """Row-normalised (each row is one true category's photos), Korean labels."""
    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"], dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    names = [taxonomy[s].label for s in labels]
    size = max(6.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), names)
    ax.set_xlabel("예측 (predicted)")
    ax.set_ylabel("정답 (true)")
    ax.set_title(f"Confusion matrix, row-normalised (n={metrics['n']})")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    f"{normalised[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if normalised[i, j] > 0.5 else "black",
                )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(history_csv: Path, path: Path) -> bool:
    from snapcat.training import read_history

    rows = read_history(history_csv)  # one per epoch, in order
    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, keys) in zip(
        axes,
        (("loss", ("loss", "val_loss")), ("accuracy", ("top1", "val_top1", "top3", "val_top3"))),
        strict=True,
    ):
        for key in keys:
            values = [row.get(key, np.nan) for row in rows]
            if not all(np.isnan(values)):
                ax.plot([row["epoch"] + 1 for row in rows], values, marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def write_report(
    out: Path,
    metrics: dict,
    taxonomy: Taxonomy,
    gallery: dict,
    history_csv: Path | None,
    disagreements: dict | None = None,
) -> Path:
    """Writes confusion_matrix.png, training_curves.png (if there is a history) and report.html.

    ``disagreements`` (from :func:`snapcat.paired.disagreements`) are the photos on which the
    candidate and the production model disagree, shown with both models' top-3."""
    plot_confusion_matrix(metrics, taxonomy, out / "confusion_matrix.png")
    curves = history_csv is not None and plot_training_curves(
        history_csv, out / "training_curves.png"
    )
    label = {s: taxonomy[s].label for s in taxonomy.slugs}
    html = _TEMPLATE.render(
        metrics=metrics,
        label=label,
        confusion_png=_data_uri((out / "confusion_matrix.png").read_bytes(), "image/png"),
        curves_png=_data_uri((out / "training_curves.png").read_bytes(), "image/png")
        if curves
        else None,
        gallery={
            slug: [{**item, "src": _data_uri(item["image"], "image/jpeg")} for item in items]
            for slug, items in gallery.items()
        },
        disagreements={
            side: [{**item, "src": _data_uri(item["image"], "image/jpeg")} for item in items]
            for side, items in (disagreements or {}).items()
        },
    )
    path = out / "report.html"
    path.write_text(html, "utf-8")
    return path
