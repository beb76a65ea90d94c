"""Candidates compared on one test split: the seed's experiment (backbone x mode) as a run.

The seed compared Xception and InceptionV3, each by feature extraction and by fine-tuning, and
shipped the best. Here a candidate is a ``backbone:mode`` pair; the pipeline trains every
candidate, evaluates each on the same test split, and only the best goes on to the gate and the
canary. ``snapcat compare`` prints the same table from evaluation folders.
"""

from __future__ import annotations

from dataclasses import dataclass

from snapcat.errors import SnapcatError
from snapcat.train.trainer import BACKBONE_NAMES, MODES


class CandidateError(SnapcatError, ValueError):
    """A candidate list the pipeline cannot train (unknown backbone or mode, duplicates)."""


class DifferentTestSets(SnapcatError, ValueError):
    """Runs measured on different photos: their figures cannot be ranked against each other."""


def photo_set_key(metrics: dict) -> str:
    """A run's test-set identity: the content fingerprint evaluation writes (``test_set.sha256``:
    its photos' hashes and labels), or for an older metrics.json without one, only its split and
    size (marked unverified)."""
    found = metrics.get("test_set") or {}
    if found.get("sha256"):
        return str(found["sha256"])
    return f"unverified:{metrics.get('split', '?')}:{metrics.get('n', '?')}"


def check_same_test_set(runs: list[tuple[str, dict]], allow_different: bool = False) -> list[str]:
    """Refuses (DifferentTestSets) runs scored on different photos, unless ``allow_different``;
    returns warnings to print above the table (different sets when allowed, unverified runs)."""
    groups: dict[str, list[str]] = {}
    for name, metrics in runs:
        groups.setdefault(photo_set_key(metrics), []).append(name)
    warnings = []
    unverified = [n for key, names in groups.items() if key.startswith("unverified:")
                  for n in names]  # fmt: skip
    if unverified:
        warnings.append(
            f"no test-set fingerprint in {', '.join(unverified)} (evaluated before snapcat wrote "
            "one): only the split and photo count could be compared"
        )
    if len(groups) > 1:
        described = "; ".join(
            f"{', '.join(names)}: {_describe(key, runs, names[0])}" for key, names in groups.items()
        )
        message = (
            f"these runs were measured on {len(groups)} different test sets ({described}); their "
            "figures are not comparable. Evaluate them on the same prepared split"
        )
        if not allow_different:
            raise DifferentTestSets(message + " (or pass --allow-different-test-sets to list them)")
        warnings.append("WARNING: " + message + "; the ranking below mixes them")
    return warnings


def _describe(key: str, runs: list[tuple[str, dict]], name: str) -> str:
    metrics = dict(runs)[name]
    return f"n={metrics.get('n', '?')}, " + (
        "fingerprint unknown" if key.startswith("unverified:") else f"sha256 {key[:12]}"
    )


@dataclass(frozen=True)
class Candidate:
    backbone: str
    mode: str

    def __str__(self) -> str:
        return f"{self.backbone}:{self.mode}"

    @classmethod
    def parse(cls, text: str) -> Candidate:
        backbone, sep, mode = text.strip().partition(":")
        if not sep:
            raise CandidateError(f"candidate {text!r}: expected BACKBONE:MODE")
        if backbone not in BACKBONE_NAMES:
            raise CandidateError(
                f"candidate {text!r}: unknown backbone; choose from {', '.join(BACKBONE_NAMES)}"
            )
        if mode not in MODES:
            raise CandidateError(
                f"candidate {text!r}: unknown mode; choose from {', '.join(MODES)}"
            )
        return cls(backbone, mode)


def parse_candidates(items: list[str]) -> list[Candidate]:
    candidates = [Candidate.parse(item) for item in items]
    if not candidates:
        raise CandidateError("at least one candidate (BACKBONE:MODE) is needed")
    names = [str(c) for c in candidates]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CandidateError(f"candidates listed twice: {', '.join(repeated)}")
    return candidates


#: Columns of the comparison, in order: (header, how a metrics.json fills it).
COLUMNS = (
    ("backbone", lambda m: str(m.get("model", {}).get("backbone", "?"))),
    ("mode", lambda m: str(m.get("model", {}).get("mode") or "?")),
    ("size", lambda m: str(m.get("model", {}).get("image_size", "?"))),
    ("n", lambda m: str(m["n"])),
    ("test_set", lambda m: photo_set_key(m)[:8] if "sha256" in (m.get("test_set") or {}) else "?"),
    ("top1", lambda m: f"{m['top1']:.4f}"),
    ("top3", lambda m: f"{m['top3']:.4f}"),
    ("macro_f1", lambda m: f"{m.get('macro_f1', 0.0):.4f}"),
    ("params", lambda m: _millions(m.get("model", {}).get("parameters"))),
    ("ms/img", lambda m: _ms(m.get("ms_per_image"))),
    ("gate", lambda m: "blessed" if m.get("blessed") else "refused"),
)


def _millions(count) -> str:
    return f"{count / 1e6:.1f}M" if count else "?"


def _ms(value) -> str:
    return f"{value:.1f}" if value is not None else "?"


def ranking_key(metrics: dict) -> tuple[float, float, float]:
    """Best first: top-1 (what the app shows first), then top-3, then macro F1."""
    return (-metrics["top1"], -metrics["top3"], -metrics.get("macro_f1", 0.0))


def ranked(runs: list[tuple[str, dict]], sort: str = "top1") -> list[tuple[str, dict]]:
    if sort == "top1":
        return sorted(runs, key=lambda r: ranking_key(r[1]))
    return sorted(runs, key=lambda r: -r[1].get(sort, 0.0))


def rows(runs: list[tuple[str, dict]], sort: str = "top1") -> list[list[str]]:
    """Header row, then one row per run (name, metrics.json), best first."""
    table = [["run", *(name for name, _ in COLUMNS)]]
    for name, metrics in ranked(runs, sort):
        table.append([name, *(cell(metrics) for _, cell in COLUMNS)])
    return table


def text_table(runs: list[tuple[str, dict]], sort: str = "top1") -> str:
    """Aligned columns for a terminal."""
    table = rows(runs, sort)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(runs: list[tuple[str, dict]], sort: str = "top1") -> str:
    """The same table as a Markdown pipe table (KFP's Markdown artifact renders it)."""
    table = rows(runs, sort)
    lines = ["| " + " | ".join(r) + " |" for r in table]
    lines.insert(1, "|" + "|".join("---" for _ in table[0]) + "|")
    return "\n".join(lines)
