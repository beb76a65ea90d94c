"""``snapcat prepare --relabel/--exclude``: a reviewed label audit changes the next dataset."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import make_tree, read_csv

from snapcat.cli import main
from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset.corrections import EXCLUDED, apply_corrections
from snapcat.dataset.sources import SourceError, SourceItem


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def items():
    return [
        SourceItem(f"/in/{slug}/{i}.jpg", f"{slug}/{i}.jpg", slug)
        for slug in ("living-food", "plants")
        for i in range(3)
    ]


def test_relabel_takes_the_reviewed_column_and_exclude_wins(tmp_path):
    relabel = write_csv(
        tmp_path / "issues.csv",
        ("path", "given_label", "suggested_label", "label_quality", "issue"),
        [
            ("living-food/0.jpg", "living-food", "plants", "0.01", "mislabel"),
            ("living-food/1.jpg", "living-food", "식물", "0.02", "mislabel"),  # a Korean label
            ("plants/2.jpg", "plants", "living-food", "0.03", "mislabel"),
        ],
    )
    exclude = write_csv(tmp_path / "drop.csv", ("path",), [("plants/2.jpg",), ("gone.jpg",)])
    result = apply_corrections(items(), Taxonomy.load(), str(relabel), str(exclude))
    slugs = {item.display: item.slug for item in result.items}
    assert slugs["living-food/0.jpg"] == slugs["living-food/1.jpg"] == "plants"
    assert "plants/2.jpg" not in slugs and result.rejected == [("plants/2.jpg", EXCLUDED)]
    assert result.summary == {"relabelled": 2, "excluded": 1, "unmatched": ["gone.jpg"]}


def test_relabel_to_an_unknown_category_is_an_error(tmp_path):
    relabel = write_csv(tmp_path / "r.csv", ("path", "category"), [("plants/0.jpg", "spaceships")])
    with pytest.raises(SourceError, match="spaceships"):
        apply_corrections(items(), Taxonomy.load(), relabel=str(relabel))


def test_prepare_uses_the_reviewed_csvs(tmp_path):
    tree = make_tree(tmp_path / "in", {"living-food": 12, "plants": 12})
    wrong = [p.relative_to(tmp_path / "in").as_posix() for p in tree["living-food"][:3]]
    dropped = tree["plants"][0].relative_to(tmp_path / "in").as_posix()
    relabel = write_csv(
        tmp_path / "relabel.csv",
        ("path", "given_label", "suggested_label"),
        [(path, "living-food", "plants") for path in wrong],
    )
    exclude = write_csv(tmp_path / "exclude.csv", ("path",), [(dropped,)])
    out = tmp_path / "prepared"
    code = main(
        [
            "prepare",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out),
            "--image-size",
            "80",
            "--workers",
            "1",
            "--min-images-per-class",
            "5",
            "--relabel",
            str(relabel),
            "--exclude",
            str(exclude),
            "--no-progress",
        ]
    )
    assert code == 0
    index = {row["path"]: row["category"] for row in read_csv(out / "index.csv")}
    assert all(index[path] == "plants" for path in wrong)
    assert dropped not in index and len(index) == 23
    assert {"path": dropped, "reason": EXCLUDED, "detail": ""} in read_csv(out / "rejected.csv")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["corrections"] == {"relabelled": 3, "excluded": 1, "unmatched": []}
    counts = {
        slug: sum(stats["splits"][split][slug] for split in stats["splits"])
        for slug in stats["classes"]
    }
    assert counts == {"living-food": 9, "plants": 14}
