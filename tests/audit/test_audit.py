"""``snapcat audit`` on synthetic data (fast): planted label flips ranked first, the CSV and the
gallery written, the catalogue audit over batch prediction lines, and the gallery in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image_bytes, read_csv

from snapcat.audit.gallery import AuditRow, write_gallery
from snapcat.audit.ranking import (
    AMBIGUOUS,
    MISLABEL,
    out_of_sample_probabilities,
    precision_at_k,
    rank_issues,
)
from snapcat.cli import main

CLASSES = ["living-food", "plants", "pet-supplies", "sports-leisure", "games-hobbies"]


def clusters(per_class=40, dims=24, seed=0):
    """Separable Gaussian clusters (the frozen features of a learnable dataset)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (len(CLASSES), dims))
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    return centres[labels] + rng.normal(0, 1.5, (len(labels), dims)), labels


def flip(labels, share, seed=0):
    """``labels`` with ``share`` of them moved to another class; the flipped indices."""
    rng = np.random.default_rng(seed)
    planted = rng.choice(len(labels), int(share * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[planted] = (labels[planted] + rng.integers(1, len(CLASSES), len(planted))) % len(CLASSES)
    return noisy, set(int(i) for i in planted)


def test_planted_flips_rank_first_on_synthetic_features():
    features, truth = clusters()
    noisy, planted = flip(truth, 0.1)
    probabilities = out_of_sample_probabilities(features, noisy, len(CLASSES), folds=5)
    ranked = rank_issues(noisy, probabilities)
    k = len(planted)
    precision = precision_at_k(ranked.order, planted, k)
    print(f"precision at {k}: {precision:.2f}")
    assert precision >= 0.9
    flagged = {i for i, issue in enumerate(ranked.issue) if issue == MISLABEL}
    assert len(flagged & planted) >= 0.9 * k and len(flagged - planted) <= 2
    # the suggestion is the true label for the flipped photos
    assert np.mean([ranked.suggested[i] == truth[i] for i in planted]) >= 0.9


def test_an_ambiguous_photo_is_not_called_a_mislabel():
    labels = np.array([0] * 20 + [1] * 20)
    probabilities = np.where(labels[:, None] == np.arange(2), 0.95, 0.05)
    probabilities[3] = [0.52, 0.48]  # fits both: review, do not relabel
    ranked = rank_issues(labels, probabilities)
    assert ranked.issue[3] == AMBIGUOUS and ranked.order[0] == 3
    assert [i for i, issue in enumerate(ranked.issue) if issue] == [3]


def results_file(tmp_path, planted_count=4, n=40):
    """Batch prediction lines with the category each listing was posted in: the model's scores
    favour the true class, ``planted_count`` listings were posted in another category."""
    rng = np.random.default_rng(1)
    lines, planted = [], set()
    for i in range(n):
        true = i % len(CLASSES)
        given = (true + 1) % len(CLASSES) if i < planted_count else true
        if given != true:
            planted.add(f"listing-{i}")
        scores = rng.dirichlet(np.ones(len(CLASSES))) * 0.1
        scores[true] += 0.9
        photo = tmp_path / f"listing-{i}.jpg"
        photo.write_bytes(make_image_bytes("JPEG", (90, 60), seed=i))
        lines.append(
            {
                "id": f"listing-{i}",
                "categories": [],
                "confident": True,
                "model_version": "7",
                "scores": {c: round(float(s), 4) for c, s in zip(CLASSES, scores, strict=True)},
                "category": CLASSES[given],
                "disagrees": given != true,
                "uri": str(photo),
            }
        )
    lines.append({"id": "broken", "error": "corrupt-image", "detail": "x", "category": "plants"})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, planted


def test_catalogue_audit_over_batch_predictions(tmp_path):
    results, planted = results_file(tmp_path)
    out = tmp_path / "audit"
    assert main(["audit", "--predictions", str(results), "--output", str(out)]) == 0
    rows = read_csv(out / "label_issues.csv")
    assert list(rows[0]) == ["path", "given_label", "suggested_label", "label_quality", "issue"]
    top = {row["path"] for row in rows[: len(planted)]}
    assert top == planted, rows[:6]
    assert all(row["issue"] == MISLABEL for row in rows[: len(planted)])
    qualities = [float(row["label_quality"]) for row in rows]
    assert qualities == sorted(qualities)
    summary = json.loads((out / "audit.json").read_text())
    assert summary["photos"] == 40 and summary["mislabel"] >= len(planted)
    html = (out / "gallery.html").read_text()
    assert html.count('class="issue-row"') == len(rows)
    assert html.count("data:image/jpeg;base64,") >= len(rows)  # every row has its thumbnail
    assert "heat map" not in html  # no explanations yet: no empty column


def test_audit_needs_exactly_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["audit", "--output", str(tmp_path)])
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"id": "a", "error": "unreadable"}) + "\n")
    assert main(["audit", "--predictions", str(results), "--output", str(tmp_path / "o")]) == 2
    assert "carries a category" in capsys.readouterr().err


def gallery_rows(with_heatmap: bool) -> list[AuditRow]:
    rows = [
        AuditRow(f"living-food/{i}.jpg", "living-food", "plants", 0.01 * i, MISLABEL)
        for i in range(3)
    ]
    for i, row in enumerate(rows):
        row.image = make_image_bytes("JPEG", (120, 90), seed=i)
    if with_heatmap:
        rows[0].heatmap = "data:image/jpeg;base64," + __import__("base64").b64encode(
            make_image_bytes("JPEG", (40, 40), color=(255, 0, 0))
        ).decode("ascii")
    return rows


def test_gallery_heat_map_column_appears_only_with_heat_maps(tmp_path):
    labels = {"living-food": "생활/가공식품", "plants": "식물"}
    summary = {"photos": 3, "mislabel": 3, "ambiguous": 0, "method": "test"}
    write_gallery(
        gallery_rows(False), tmp_path / "a.html", labels=labels, title="t", summary=summary
    )
    write_gallery(
        gallery_rows(True), tmp_path / "b.html", labels=labels, title="t", summary=summary
    )
    without, with_ = (tmp_path / "a.html").read_text(), (tmp_path / "b.html").read_text()
    assert "heat map" not in without and with_.count('class="heatmap"') == 1
    assert "식물" in without and "@font-face" in without  # Korean labels carry their glyphs


@pytest.mark.browser
def test_gallery_renders_in_headless_chromium(tmp_path):
    """The gallery as a reviewer sees it: every thumbnail decoded and on screen, the heat map
    where a row has one, Korean labels drawn with the embedded font (no empty boxes)."""
    from browser import headless_chromium, platform_fonts

    labels = {"living-food": "생활/가공식품", "plants": "식물"}
    summary = {"photos": 3, "mislabel": 3, "ambiguous": 0, "method": "test"}
    page = tmp_path / "gallery.html"
    write_gallery(gallery_rows(True), page, labels=labels, title="Label audit", summary=summary)
    with headless_chromium() as driver:
        driver.get(page.as_uri())
        driver.execute_async_script("document.fonts.ready.then(arguments[arguments.length - 1])")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('img.thumbnail')]"
            ".filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)"
            ".length"
        )
        assert shown == 3
        heatmaps = driver.execute_script(
            "return [...document.querySelectorAll('img.heatmap')].map(i => i.naturalWidth)"
        )
        assert heatmaps == [40]
        headers = driver.execute_script(
            "return [...document.querySelectorAll('#issues th')].map(t => t.textContent)"
        )
        assert "heat map" in headers and "label quality" in headers
        driver.execute_script(
            "const cell = [...document.querySelectorAll('td')]"
            "  .find(c => c.textContent.includes('식물'));"
            "cell.setAttribute('data-probe', 'korean');"
        )
        drawn = platform_fonts(driver, '[data-probe="korean"]')
        embedded = [f for f in drawn if f["isCustomFont"] and f["familyName"] == "NanumGothic"]
        assert embedded and embedded[0]["glyphCount"] >= 2, drawn
