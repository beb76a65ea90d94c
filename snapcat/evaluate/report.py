"""The evaluation report people look at: confusion matrix, calibration, training curves, error
gallery.

``report.html`` is one self-contained file (images inlined as data URIs) so it renders the same
as a KFP HTML artifact, an attachment, or a file opened from a bucket.
"""

from __future__ import annotations

import base64
from contextlib import contextmanager
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from snapcat.contract.taxonomy import Taxonomy  # noqa: E402
from snapcat.evaluate.hangul_font import CSS_FONT_STACK, css_font_face, register_with_matplotlib  # noqa: E402

#: Where the embedded Hangul font goes in the page's <style>, once the page's text is known.
_FONT_FACE_SLOT = "/* embedded Hangul font */"


@contextmanager
def hangul_figures():
    """Figures drawn inside it write Korean labels with the bundled font, whatever the machine
    has installed; matplotlib's global settings stay as they were."""
    with plt.rc_context({"font.family": register_with_matplotlib(), "axes.unicode_minus": False}):
        yield


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


def plot_reliability(metrics: dict, taxonomy: Taxonomy, path: Path) -> None:
    """Left: the reliability diagram (accuracy per top-1 score bin) before and after temperature
    scaling; right: per predicted category, mean top-1 score against how often it was right.
    Points on the diagonal are scores that mean what they say."""
    calibration = metrics["calibration"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-1 score (confidence)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for key, name, style in (
        ("reliability_before", f"uncalibrated (ECE {calibration['ece_before']:.3f})", "o:"),
        (
            "reliability",
            f"served, T={calibration['temperature']:.2f} (ECE {calibration['ece']:.3f})",
            "s-",
        ),
    ):
        filled = [b for b in calibration[key] if b["count"]]
        left.plot(
            [b["confidence"] for b in filled], [b["accuracy"] for b in filled], style, label=name
        )
    left.set_title(f"Reliability diagram, {calibration['bins']} bins (n={metrics['n']})")
    left.legend(loc="upper left")
    per_class = calibration["per_class"]
    for slug, m in per_class.items():
        right.annotate(
            "",
            xy=(m["confidence"], m["accuracy"]),
            xytext=(m["confidence_before"], m["accuracy"]),
            arrowprops={"arrowstyle": "->", "color": "#bbb"},
        )
        right.scatter(m["confidence"], m["accuracy"], s=12 + 4 * m["predicted"] ** 0.5)
        label = taxonomy[slug].label if slug in taxonomy.slugs else slug
        right.annotate(label, (m["confidence"], m["accuracy"]), fontsize=7, xytext=(3, 3),
                       textcoords="offset points")  # fmt: skip
    right.set_title("Per predicted category (arrow: from uncalibrated)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(history_csv: Path, path: Path) -> bool:
    from snapcat.train.trainer import read_history

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
    """Writes confusion_matrix.png, reliability_diagram.png, training_curves.png (if there is a
    history) and report.html.

    ``disagreements`` (from :func:`snapcat.evaluate.paired.disagreements`) are the photos on which the
    candidate and the production model disagree, shown with both models' top-3."""
    with hangul_figures():
        plot_confusion_matrix(metrics, taxonomy, out / "confusion_matrix.png")
        plot_reliability(metrics, taxonomy, out / "reliability_diagram.png")
        curves = history_csv is not None and plot_training_curves(
            history_csv, out / "training_curves.png"
        )
    label = {s: taxonomy[s].label for s in taxonomy.slugs}
    html = _TEMPLATE.render(
        font_stack=CSS_FONT_STACK,
        font_face_slot=_FONT_FACE_SLOT,
        metrics=metrics,
        label=label,
        confusion_png=_data_uri((out / "confusion_matrix.png").read_bytes(), "image/png"),
        reliability_png=_data_uri((out / "reliability_diagram.png").read_bytes(), "image/png"),
        curves_png=_data_uri((out / "training_curves.png").read_bytes(), "image/png")
        if curves
        else None,
        gallery={
            slug: [
                {
                    **item,
                    "src": _data_uri(item["image"], "image/jpeg"),
                    "overlay_src": _data_uri(item["overlay"], "image/png")
                    if item.get("overlay")
                    else None,
                }
                for item in items
            ]
            for slug, items in gallery.items()
        },
        disagreements={
            side: [{**item, "src": _data_uri(item["image"], "image/jpeg")} for item in items]
            for side, items in (disagreements or {}).items()
        },
    )
    html = html.replace(_FONT_FACE_SLOT, css_font_face(html), 1)
    path = out / "report.html"
    path.write_text(html, "utf-8")
    return path
