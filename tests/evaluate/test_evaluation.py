"""``snapcat evaluate`` and ``snapcat compare``: metrics.json, the report, the release gate against
a baseline, and the exit codes scripts rely on."""

from __future__ import annotations

import base64
import copy
import html
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["_training_fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


def _cli(*argv: str) -> int:
    from snapcat.cli import main

    return main(list(argv))


def _confusion(metrics: dict) -> tuple[list[str], np.ndarray]:
    return metrics["confusion_matrix"]["labels"], np.array(metrics["confusion_matrix"]["matrix"])


# ------------------------------------------------------------------------------ metrics.json
def test_metrics_json(evaluated, prepared_stats, prepared):
    from snapcat.evaluate.gate import GateConfig, gate

    saved = json.loads((evaluated.output / "metrics.json").read_text("utf-8"))
    assert saved == json.loads(json.dumps(evaluated.metrics))
    n_test = sum(prepared_stats["splits"]["test"].values())
    assert saved["n"] == n_test and saved["split"] == "test"
    labels, matrix = _confusion(saved)
    assert labels == prepared_stats["classes"]
    assert matrix.sum() == n_test
    assert saved["top1"] == pytest.approx(np.trace(matrix) / n_test, abs=1e-6)
    assert 0 <= saved["top1"] <= saved["top3"] <= 1

    assert set(saved["per_class"]) <= set(labels)
    for slug, m in saved["per_class"].items():
        assert set(m) == {"precision", "recall", "f1", "support"}
        i = labels.index(slug)
        assert m["support"] == matrix[i].sum() == prepared_stats["splits"]["test"][slug]
        if m["support"]:
            assert m["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum(), abs=1e-6)

    assert isinstance(saved["blessed"], bool)
    # No baseline: the absolute floors, exactly as gate() decides.
    assert saved["baseline"] is None
    assert (saved["blessed"], saved["reasons"]) == gate(saved, None, GateConfig())
    assert saved["model"]["mode"] == "two-phase" and saved["model"]["backbone"] == "xception"
    # which photos were scored, by content (snapcat compare refuses to rank different sets)
    from snapcat.dataset.shards import read_split
    from snapcat.evaluate.evaluation import photo_set_fingerprint

    assert saved["test_set"]["n"] == n_test and len(saved["test_set"]["sha256"]) == 64
    assert saved["test_set"] == photo_set_fingerprint(read_split(str(prepared), "test"), "test")
    low, high = saved["calibration"]["ece_ci95"]
    assert low <= saved["calibration"]["ece"] <= high


def test_evaluation_is_recorded_in_the_model_card(evaluated, trained):
    card = json.loads((trained.version_dir / "model_card.json").read_text("utf-8"))
    assert card["evaluation"]["split"] == "test"
    assert card["evaluation"]["n"] == evaluated.metrics["n"]
    assert card["evaluation"]["blessed"] in (True, False)
    assert "result" in card and "tensorflow_version" in card  # the rest is kept


# ------------------------------------------------------------------------------ report
def test_confusion_matrix_png_without_missing_glyphs(evaluated):
    png = evaluated.output / "confusion_matrix.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (evaluated.output / "training_curves.png").is_file()
    glyphs = [w for w in evaluated.warnings + evaluated.font_log if "missing from" in w]
    assert not glyphs, glyphs[:3]
    fonts = [m for m in evaluated.font_log if "findfont" in m]
    assert not fonts, fonts[:3]


def test_missing_glyphs_would_be_noticed(tmp_path):
    """Control for the test above: Korean text in a font without Hangul warns, and the same
    capture sees it."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plt.rc_context({"font.family": "DejaVu Sans"}):
            fig, ax = plt.subplots()
            ax.set_title("가구/인테리어")
            fig.savefig(tmp_path / "x.png")
            plt.close(fig)
    assert any("missing from" in str(w.message) for w in caught)


def test_report_html_gallery(evaluated, prepared, taxonomy):
    from snapcat.dataset.shards import read_split

    page = (evaluated.output / "report.html").read_text("utf-8")
    metrics = evaluated.metrics
    charts = page.split("<h2>Misclassified photos</h2>", 1)[0]
    assert charts.count('src="data:image/png;base64,') == 3  # confusion, reliability, curves
    labels, matrix = _confusion(metrics)
    wrong = {slug: int(matrix[i].sum() - matrix[i, i]) for i, slug in enumerate(labels)}
    assert sum(wrong.values()) > 0, "a 2-epoch model from scratch makes mistakes"

    sections = re.split(r"<h3>", page.split("<h2>Misclassified photos</h2>", 1)[1])[1:]
    shown = {}
    images = {r["image"] for r in read_split(str(prepared), "test")}
    for section in sections:
        heading = re.match(r"(.*?) <code>([a-z0-9-]+)</code></h3>", section)
        assert heading, section[:200]
        slug = heading.group(2)
        assert html.unescape(heading.group(1)) == taxonomy[slug].label  # the true category
        figures = re.split(r"<figure[ >]", section)[1:]
        shown[slug] = len(figures)
        for figure in figures:
            src = re.search(r'<img src="data:image/jpeg;base64,([^"]+)"', figure)
            assert src, figure[:200]
            photo = base64.b64decode(src.group(1))
            assert photo in images
            # beside it, the Grad-CAM overlay of its wrong top-1 from the explain signature
            overlay = re.search(r'<img class="overlay" src="data:image/png;base64,([^"]+)"', figure)
            assert overlay, figure[:300]
            _assert_overlay_of(base64.b64decode(overlay.group(1)), photo)
            top3 = re.findall(r"(\d)\. ([^<]+?) (\d\.\d\d)</span>", figure)
            assert [int(rank) for rank, _, _ in top3] == [1, 2, 3]
            scores = [float(score) for _, _, score in top3]
            assert scores == sorted(scores, reverse=True)
            predicted = html.unescape(top3[0][1])
            assert predicted != taxonomy[slug].label  # misclassified, by definition
            assert predicted in {taxonomy[s].label for s in labels}
    gallery_size = 8  # EvaluateConfig.gallery_per_class
    assert shown == {s: min(n, gallery_size) for s, n in wrong.items() if n}


def _assert_overlay_of(overlay: bytes, photo: bytes) -> None:
    """``overlay`` is a PNG of ``photo``'s size with a heat map drawn on it (how much of the photo
    it covers depends on the model: tests/imaging/test_heat_overlay.py checks the blending)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(overlay)) as drawn, Image.open(io.BytesIO(photo)) as original:
        assert drawn.format == "PNG" and drawn.size == original.size
        difference = np.abs(
            np.asarray(drawn.convert("RGB"), float) - np.asarray(original.convert("RGB"), float)
        )
    assert difference.max() > 30  # coloured where the model looked


# ------------------------------------------------------------------------------ gate via CLI
def _baseline(tmp_path, metrics: dict, name: str, **changes) -> str:
    baseline = copy.deepcopy(metrics)
    baseline.update(changes)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(baseline))
    return str(path)


def test_evaluate_blesses_against_a_lower_baseline(evaluated, trained, prepared, tmp_path, capsys):
    m = evaluated.metrics
    baseline = _baseline(tmp_path, m, "lower", top1=m["top1"] - 0.005, top3=m["top3"] - 0.005)
    out = tmp_path / "blessed"
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output)]
    argv += ["--output", str(out), "--baseline", baseline, "--fail-if-refused", "--no-progress"]
    assert _cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "gate: BLESSED" in printed
    saved = json.loads((out / "metrics.json").read_text("utf-8"))
    assert saved["blessed"] is True
    assert saved["baseline"]["uri"] == baseline
    # a stored metrics.json is the labelled fallback, not a paired comparison
    assert saved["baseline"]["source"] == "stored-metrics" and saved["comparison"] is None
    assert saved["reasons"][0].startswith("FALLBACK baseline")
    assert "Fallback baseline" in (out / "report.html").read_text("utf-8")
    assert saved["top1"] == m["top1"] and saved["n"] == m["n"]  # same model, same photos


def test_evaluate_refuses_a_worse_model(evaluated, trained, prepared, tmp_path, capsys):
    m = evaluated.metrics
    supported = {s: c for s, c in m["per_class"].items() if c["support"]}
    slug = min(supported, key=lambda s: supported[s]["recall"])
    assert supported[slug]["recall"] < 0.5, "a 2-epoch model from scratch is this bad somewhere"
    per_class = copy.deepcopy(m["per_class"])
    per_class[slug]["recall"] = 1.0
    baseline = _baseline(tmp_path, m, "higher", top1=m["top1"] + 0.05, per_class=per_class)
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output)]
    argv += ["--output", str(tmp_path / "refused"), "--baseline", baseline, "--no-progress"]
    argv += ["--min-class-support", "1"]
    assert _cli(*argv) == 0  # refused, but not asked to fail
    assert "gate: REFUSED" in capsys.readouterr().out
    saved = json.loads((tmp_path / "refused" / "metrics.json").read_text("utf-8"))
    assert saved["blessed"] is False
    assert any(r.startswith("top1") and "beyond" in r for r in saved["reasons"])
    assert any(r.startswith(f"{slug} recall") for r in saved["reasons"])
    assert any(r.startswith("top3") and "within" in r for r in saved["reasons"])

    assert _cli(*argv, "--fail-if-refused") == 3


def test_evaluate_rejects_a_baseline_that_is_not_metrics(trained, prepared, tmp_path, capsys):
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"accuracy": 0.9}')
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output)]
    argv += ["--output", str(tmp_path / "e"), "--baseline", str(bogus), "--no-progress"]
    assert _cli(*argv) == 2
    assert "no top1/top3" in capsys.readouterr().err
    assert not (tmp_path / "e" / "metrics.json").exists()


# ------------------------------------------------------------------------------ champion vs challenger
@pytest.fixture(scope="module")
def production_model(prepared, prepared_stats, tmp_path_factory) -> str:
    """A different model over the same classes (a linear head on pooled pixels), exported as
    production would be."""
    import keras

    from snapcat.train.export import export_model

    keras.utils.set_random_seed(7)
    size = prepared_stats["image_size"]
    model = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(prepared_stats["classes"]), activation="softmax"),
        ]
    )
    root = tmp_path_factory.mktemp("production") / "model"
    export_model(
        model,
        str(root),
        classes=prepared_stats["classes"],
        image_size=size,
        jpeg_quality=90,
        backbone="tiny",
        taxonomy_dir=str(prepared),
    )
    return str(root)


def test_evaluate_against_the_production_model_on_the_same_photos(
    evaluated, trained, prepared, production_model, tmp_path, capsys
):
    from snapcat.dataset.shards import read_split
    from snapcat.evaluate.paired import Outcomes
    from snapcat.train.export import ServingModel

    out = tmp_path / "paired"
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output)]
    argv += ["--output", str(out), "--baseline-model", production_model, "--no-progress"]
    assert _cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "top1 difference" in printed and "McNemar" in printed
    saved = json.loads((out / "metrics.json").read_text("utf-8"))
    m = evaluated.metrics
    assert (saved["n"], saved["top1"], saved["top3"]) == (m["n"], m["top1"], m["top3"])

    # production's figures are its own, measured on the very same photos
    records = read_split(str(prepared), "test")
    truth = [r["slug"] for r in records]
    production = ServingModel(production_model)
    theirs = Outcomes.of(
        truth, production.predict([r["image"] for r in records]), list(production.info.classes)
    )
    base = saved["baseline"]
    assert base["source"] == "model" and base["uri"] == production_model
    assert base["model"]["backbone"] == "tiny"
    assert base["n"] == saved["n"] == len(records)
    assert base["top1"] == pytest.approx(theirs.top1.mean(), abs=1e-6)
    assert base["top3"] == pytest.approx(theirs.top3.mean(), abs=1e-6)

    comparison = saved["comparison"]
    assert comparison["n"] == saved["n"]
    for metric in ("top1", "top3"):
        c = comparison[metric]
        assert (c["candidate"], c["baseline"]) == (saved[metric], base[metric])
        # three figures each rounded to 6 decimals: their difference may be off by 1.5e-6
        assert c["difference"] == pytest.approx(saved[metric] - base[metric], abs=2e-6)
        low, high = c["ci95"]
        assert low <= c["difference"] <= high
        assert 0 <= c["mcnemar_p"] <= 1
    discordant = comparison["top1"]["candidate_only"] + comparison["top1"]["baseline_only"]
    assert discordant > 0, "two different models disagree somewhere"
    assert saved["reasons"][0].startswith("verdict: ")
    assert saved["reasons"][1].startswith("top1: candidate")
    assert f"same {saved['n']} photos" in saved["reasons"][1]
    # ECE is a paired rule too: both models' ECE on these photos, with its interval
    ece = comparison["ece"]
    assert ece["n"] == saved["n"] and ece["candidate"] == saved["calibration"]["ece"]
    assert ece["ci95"][0] <= ece["difference"] <= ece["ci95"][1]
    assert any(r.startswith("ECE: candidate") and "95% interval" in r for r in saved["reasons"])

    report = (out / "report.html").read_text("utf-8")
    assert f"Candidate vs production, on the same {saved['n']} photos" in report
    shown = len(re.findall(r"<b>production</b>:", report))
    limit = 24  # EvaluateConfig.disagreements, per side
    expected = min(limit, comparison["top1"]["candidate_only"])
    expected += min(limit, comparison["top1"]["baseline_only"])
    assert shown == expected


def test_a_model_against_itself_differs_by_nothing(trained, prepared, tmp_path, capsys):
    out = tmp_path / "self"
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output)]
    argv += ["--output", str(out), "--baseline-model", str(trained.version_dir), "--no-progress"]
    assert _cli(*argv, "--fail-if-refused") == 0
    saved = json.loads((out / "metrics.json").read_text("utf-8"))
    for metric in ("top1", "top3"):
        assert saved["comparison"][metric]["difference"] == 0
        assert saved["comparison"][metric]["ci95"] == [0, 0]
    assert saved["blessed"] is True
    assert "gate: BLESSED" in capsys.readouterr().out


def test_baseline_isvc_without_a_cluster_falls_back_to_stored_metrics(
    evaluated, trained, prepared, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output), "--no-progress"]
    argv += ["--output", str(tmp_path / "e"), "--baseline-isvc", "snapcat/listing-category"]
    assert _cli(*argv) == 2  # no cluster and no fallback: said, not guessed
    err = capsys.readouterr().err
    assert "production model not read from InferenceService snapcat/listing-category" in err
    assert "--dry-run" not in err  # evaluate has none: the rollout commands' hint is theirs
    assert err.rstrip().endswith("pass --baseline-model, or --baseline as a fallback")
    baseline = _baseline(tmp_path, evaluated.metrics, "stored")
    assert _cli(*argv, "--baseline", baseline) == 0
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text("utf-8"))
    assert saved["reasons"][0].startswith("production model not read from")
    assert saved["reasons"][1].startswith("FALLBACK baseline")
    assert saved["baseline"]["source"] == "stored-metrics"


# ------------------------------------------------------------------------------ compare
def test_compare_prints_a_table(evaluated, tmp_path, capsys):
    other = tmp_path / "inceptionv3-fe"
    other.mkdir()
    better = copy.deepcopy(evaluated.metrics)
    assert evaluated.metrics["top3"] < 0.99
    assert evaluated.metrics["top1"] < 0.5
    better.update(top1=0.5, top3=0.99, macro_f1=0.42, blessed=True, ms_per_image=12.34)
    better["model"].update(
        backbone="inceptionv3", mode="feature-extraction", image_size=75, parameters=21_800_000
    )
    (other / "metrics.json").write_text(json.dumps(better))

    assert _cli("compare", str(evaluated.output), str(other)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == [
        "run",
        "backbone",
        "mode",
        "size",
        "n",
        "test_set",
        "top1",
        "top3",
        "macro_f1",
        "params",
        "ms/img",
        "gate",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 4
    first, second = lines[2].split(), lines[3].split()  # sorted by top-1, best first
    assert first == [
        "inceptionv3-fe",
        "inceptionv3",
        "feature-extraction",
        "75",
        str(better["n"]),
        better["test_set"]["sha256"][:8],
        "0.5000",
        "0.9900",
        "0.4200",
        "21.8M",
        "12.3",
        "blessed",
    ]
    m = evaluated.metrics
    assert second[:5] == [evaluated.output.name, "xception", "two-phase", "71", str(m["n"])]
    assert second[6:8] == [f"{m['top1']:.4f}", f"{m['top3']:.4f}"]
    assert second[-1] == ("blessed" if m["blessed"] else "refused")


def test_compare_needs_metrics(tmp_path, capsys):
    assert _cli("compare", str(tmp_path)) == 2
    assert "no metrics.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------ calibration
def test_calibration_before_and_after_in_metrics_report_and_card(evaluated, trained):
    from snapcat.stats import ECE_BINS

    c = evaluated.metrics["calibration"]
    card = json.loads((trained.version_dir / "model_card.json").read_text("utf-8"))
    assert c["temperature"] == card["calibration"]["temperature"]
    assert c["bins"] == ECE_BINS == len(c["reliability"]) == len(c["reliability_before"])
    assert sum(b["count"] for b in c["reliability"]) == evaluated.metrics["n"]
    assert 0 <= c["ece"] <= 1 and 0 <= c["ece_before"] <= 1 and c["nll"] > 0
    share = c["confidence"]
    assert share["threshold"] == card["calibration"]["confidence_threshold"]
    assert 0 <= share["coverage"] <= 1
    assert share["confident"] == round(share["coverage"] * evaluated.metrics["n"])
    assert set(c["per_class"]) <= set(evaluated.metrics["per_class"])
    assert sum(m["predicted"] for m in c["per_class"].values()) == evaluated.metrics["n"]
    assert card["evaluation"]["calibration"]["ece"] == c["ece"]

    png = evaluated.output / "reliability_diagram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (evaluated.output / "report.html").read_text("utf-8")
    assert 'alt="reliability diagram' in page and "Expected calibration error" in page
    assert f"{c['ece']:.4f}" in page


def test_gate_refuses_clearly_worse_calibration(evaluated, trained, prepared, tmp_path, capsys):
    from snapcat.evaluate.gate import GateConfig, gate

    m = evaluated.metrics
    # a production model 0.2 better calibrated than this one (synthetic, so it may go below 0)
    calibration = {**m["calibration"], "ece": m["calibration"]["ece"] - 0.2}
    baseline = _baseline(tmp_path, m, "calibrated", calibration=calibration)
    argv = ["evaluate", "--data", str(prepared), "--model", str(trained.output), "--no-progress"]
    argv += ["--output", str(tmp_path / "out"), "--baseline", baseline, "--max-ece-increase", "0"]
    assert _cli(*argv) == 0
    printed = capsys.readouterr().out
    assert "calibration: T=" in printed
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text("utf-8"))
    ece_reasons = [r for r in saved["reasons"] if r.startswith("ECE")]
    assert saved["blessed"] is False and "beyond" in ece_reasons[0]
    assert "gate: REFUSED" in printed
    assert saved["gate"]["max_ece_increase"] == 0
    # the same baseline with room for the difference: calibration does not refuse it
    production = json.loads(Path(baseline).read_text("utf-8"))
    _, reasons = gate(saved, production, GateConfig(max_ece_increase=0.3))
    assert any(r.startswith("ECE") and "within" in r for r in reasons)


# ------------------------------------------------------------------------------ in a browser
@pytest.mark.browser
def test_report_renders_korean_charts_and_gallery_in_headless_chromium(evaluated, tmp_path):
    """The report as a person sees it, on a machine without CJK fonts (CI's): Chromium draws the
    Korean labels with the page's embedded font (no fallback font drawing empty boxes), and the
    confusion matrix, the reliability diagram and the gallery are on screen."""
    from browser import headless_chromium, platform_fonts
    from PIL import Image

    page = evaluated.output / "report.html"
    with headless_chromium() as driver:
        driver.get(page.as_uri())
        driver.execute_async_script("document.fonts.ready.then(arguments[arguments.length - 1])")

        headings = driver.execute_script(
            "return [...document.querySelectorAll('h3')]"
            ".filter(h => /[\\uac00-\\ud7a3]/.test(h.textContent)).map(h => h.textContent)"
        )
        assert headings, "no Korean category heading in the page"
        # Every element whose own text holds Korean (table cells, headings, captions): the
        # embedded font drew each Hangul syllable, no fallback font drew one as an empty box.
        probes = driver.execute_script(
            "const all = [...document.body.querySelectorAll('td, th, h1, h2, h3, p, span, li')];"
            "const own = e => [...e.childNodes].filter(n => n.nodeType === 3)"
            "  .map(n => n.textContent).join('');"
            "const korean = all.filter(e => /[\uac00-\ud7a3]/.test(own(e)));"
            "korean.forEach((e, i) => e.setAttribute('data-probe', i));"
            "return korean.map(e => e.textContent);"
        )
        assert len(probes) > 10, probes
        for i, text in enumerate(probes):
            drawn = platform_fonts(driver, f'[data-probe="{i}"]')
            syllables = sum("\uac00" <= ch <= "\ud7a3" for ch in text)
            embedded = [f for f in drawn if f["isCustomFont"] and f["familyName"] == "NanumGothic"]
            assert embedded and embedded[0]["glyphCount"] >= syllables, (text, drawn)
            others = sum(f["glyphCount"] for f in drawn if f not in embedded)
            assert others <= len(text) - syllables, (text, drawn)  # no Hangul from a fallback

        for alt in ("confusion matrix", "reliability diagram"):
            box = driver.execute_script(
                "const i = [...document.images].find(i => i.alt.toLowerCase().includes(arguments[0]));"
                "if (!i) return null; i.scrollIntoView();"
                "const r = i.getBoundingClientRect();"
                "return {w: i.naturalWidth, h: r.height, shown: r.width > 0 && r.height > 0}",
                alt,
            )
            assert box and box["w"] > 200 and box["shown"], (alt, box)
        figures = driver.execute_script(
            "return [...document.querySelectorAll('.gallery figure img')]"
            ".filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)"
            ".length"
        )
        assert figures > 0, "the gallery shows no photo"
        # every misclassified photo's Grad-CAM overlay is on screen beside it, at the photo's size
        overlays = driver.execute_script(
            "const o = [...document.querySelectorAll('.gallery figure img.overlay')];"
            "return o.map(i => { i.scrollIntoView(); const r = i.getBoundingClientRect();"
            "  const p = i.previousElementSibling.getBoundingClientRect();"
            "  return {ok: i.complete && i.naturalWidth > 0, w: r.width, h: r.height,"
            "          beside: Math.abs(r.top - p.top) < 2 && r.left >= p.right,"
            "          visible: getComputedStyle(i).visibility === 'visible' &&"
            "                   getComputedStyle(i).opacity === '1'}; })"
        )
        assert overlays, "the gallery shows no overlay"
        for box in overlays:
            assert box["ok"] and box["w"] >= 150 and box["h"] >= 150 and box["visible"], box
            assert box["beside"], box

        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10, "the screenshot is blank"
