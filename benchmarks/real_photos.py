"""A small real-photo check set, built reproducibly from two pinned Debian packages.

The bundled sample (``data/sample``) is clip art: it hides what training, calibration and the
``confident`` flag do on photographs. This script builds a folder-per-category set of real
photographs from public, licence-clean *packages* only (no other network):

- ``tuxpaint-stamps-default`` (Tux Paint's stamps, GPL-2): photographs of fruit, vegetables,
  flowers, trees, animals, balls, musical instruments, cut out onto a transparent background
  (product-photo style; ``snapcat prepare`` composites them onto white). Its clip-art stamps
  (SVGs, ``cartoon`` folders, drawn clothes, chess renders) are not used.
- ``gcompris-qt-data`` (GCompris' activity data): the categorization activity's photographs of
  fish, kitchenware and balls (Wikimedia Commons photos, public domain or CC0, each with its
  author and source in the package's README beside it) and the farm-animal photographs (public
  domain / CC-BY-SA, per the same READMEs). They sit inside Qt resource files (``.rcc``), read
  here with a small parser of the documented format.

Every photo is a distinct photograph (no crops or augmented copies). Files are copied byte for
byte; the mapping to taxonomy categories is the explicit lists below. Output: ``OUT/<slug>/...``,
``OUT/manifest.csv`` and ``OUT/PROVENANCE.md`` (package, version, file, licence per photo; the
committed copy is ``benchmarks/real_photos_PROVENANCE.md``).

    .venv/bin/python benchmarks/real_photos.py [--out .cache/real-photos] [--provenance FILE]

Needs ``apt-get download`` and ``dpkg-deb`` (Debian; CI runs as root with apt access); the
``.deb`` files are pinned by version *and* SHA-256 and cached in ``OUT/../debs``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / ".cache" / "real-photos"
BUILD_VERSION = "1"  # bump when the mapping changes: a cached set of another version is rebuilt

PACKAGES = {
    "tuxpaint-stamps-default": (
        "2022.06.04-1",
        "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34",
    ),
    "gcompris-qt-data": (
        "3.1-2",
        "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
    ),
}

TUX = "usr/share/tuxpaint/stamps/"
TUX_LICENCE = "GPL-2 (Debian copyright of tuxpaint-stamps-default)"


def _tux(folder: str, names: str) -> list[str]:
    return [f"{TUX}{folder}/{n}.png" for n in names.split()]


# category slug -> files inside tuxpaint-stamps-default
TUX_FILES: dict[str, list[str]] = {
    "living-food": _tux(
        "food/fruit",
        "Apricot_whole Cherry_Stella Strawberry2 apple_fuji apple_granny_smith apple_green "
        "apple_red apple_sierra_beauty apricot avocado banana cherimoya grapes kiwi lemon mandarine "
        "mango orange orange_seville pear pineapple pomegranate raspberry sliced_lime "
        "sliced_orange strawberry",
    )
    + _tux(
        "food/vegetables",
        "broccoli carrot chilepepper corn eggplant garlic garlics lettuce mushroom onion "
        "pattypan_squash pepper potato pumpkin_small redlettuce tomato yam yellowpepper",
    )
    + _tux("food/nuts", "almond pecan walnut walnut_shelled")
    + _tux("food/spices", "ginger")
    + _tux("household/dishes", "glass pitcher_small teapot")
    + _tux("household", "kettle"),
    "plants": _tux("plants", "eggplant lavender lettuce_bolted thyme")
    + _tux(
        "plants/flowers",
        "adeenia anemone_red anthoorium appooppanthady bolsom chemparathi daffodil flower1 "
        "flower10 flower2 flower3 flower4 flower5 flower6 flower7 flower8 flower9 iris marigold "
        "pigface red-gazania rose whitestar-petunia yellow-flower",
    )
    + _tux("plants/flowers/plastic", "chuvanna_plastic_poo")
    + _tux("plants/trees", "birch holly_leaves holm_oak liberia-palm pinecone tree336"),
    "pet-supplies": _tux("animals/mammals/dogs", "dog")
    + _tux("animals/mammals/rodents", "mouse rabbit-2 rabbit rat")
    + _tux("animals/mammals", "ferret rabbit_little")
    + _tux(
        "animals/fish",
        "bluegroper butterflyfish clownfish coraltrout dolphinfish lionfish moonwrasse seahorse "
        "shrimp stripedfish",
    )
    + _tux(
        "animals/birds",
        "adelaide-rosella chicken_profile drake duck gander hen pigeon rainbow-lorikeet rooster",
    ),
    "sports-leisure": _tux(
        "sports",
        "australian_rules_football basketball cricketball football soccer tennis_ball "
        "tennis_racket trophy_cup",
    )
    + _tux("hobbies", "binoculars"),
    "games-hobbies": _tux("hobbies", "camera_35mm")
    + _tux("hobbies/music/brass", "trumpet")
    + _tux("hobbies/music/wind", "bassoon")
    + _tux("hobbies/music/percussion", "cymbal_crash drum_tomtom_floor drumkit")
    + _tux(
        "hobbies/music/string",
        "cello guitar2 guitar_classical guitar_electric guitar_electric_bass violin",
    ),
}

GC_RCC = "usr/share/gcompris-qt/rcc/"
CAT = "/gcompris/src/activities/categorization/resource/images/"
FARM = "/gcompris/src/activities/explore_farm_animals/resource/animals/"
# category slug -> (rcc file, path inside it)
GC_FILES: dict[str, list[tuple[str, str]]] = {
    "pet-supplies": [("categorization.rcc", f"{CAT}fishes/fish{i}.webp") for i in range(1, 29)]
    + [("explore_farm_animals.rcc", f"{FARM}{n}.webp") for n in ("cat", "dog", "duck")],
    "living-food": [
        ("categorization.rcc", f"{CAT}others/{n}.webp")
        for n in ("buffetset", "cup", "knife", "pan", "plate", "spoons")
    ],
    "sports-leisure": [
        ("categorization.rcc", f"{CAT}others/{n}.webp") for n in ("baseball", "volleyball")
    ],
}


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Every file in a Qt resource (``.rcc``) file, by path (formats 1-3, zlib or stored).

    The layout is Qt's (qtbase ``src/tools/rcc/rcc.cpp``): a ``qres`` header with the offsets of
    the tree, the data and the names; tree nodes of 14 bytes (22 from format 2, with a
    modification time); zlib-compressed entries carry qCompress' 4-byte length prefix.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource file")
    version, tree, payload, names = struct.unpack(">iiii", data[4:20])
    node_size = 14 if version == 1 else 22

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">iH", data[at : at + 6])
        here = prefix + ("/" + name(name_offset) if index else "")
        if flags & 2:  # directory
            count, first = struct.unpack(">ii", data[at + 6 : at + 14])
            stack.extend((child, here) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">i", data[at + 10 : at + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        raw = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{here}: zstd-compressed resources are not supported")
        files[here] = zlib.decompress(raw[4:]) if flags & 1 else raw
    return files


def gcompris_licences(files: dict[str, bytes]) -> dict[str, str]:
    """Licence and source of each photo from the README files beside them in the package."""
    out: dict[str, str] = {}
    for path, raw in files.items():
        if not path.endswith("/README"):
            continue
        folder = path.rsplit("/", 1)[0]
        block: dict[str, str] = {}
        lines = raw.decode("utf-8", "replace").splitlines() + [""]
        in_files = False
        for line in lines:
            line = line.strip()
            if not line:
                in_files = False
                continue
            if in_files:
                licence = block.get("License", "see README")
                source = block.get("Source", "")
                who = block.get("Copyright", "")
                out[f"{folder}/{line}"] = "; ".join(x for x in (licence, who, source) if x)
                continue
            key, _, value = line.partition(":")
            if key == "Files":
                in_files = True
                continue
            if key in ("Copyright", "License", "Source"):
                block[key] = value.strip()
    return out


def fetch_deb(package: str, debs: Path) -> Path:
    """The pinned ``.deb`` (``apt-get download PKG=VERSION``), checked against its SHA-256."""
    version, sha = PACKAGES[package]
    debs.mkdir(parents=True, exist_ok=True)
    for existing in debs.glob(f"{package}_*.deb"):
        if hashlib.sha256(existing.read_bytes()).hexdigest() == sha:
            return existing
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available: the real-photo set needs Debian's packages")
    command = ["apt-get", "download", f"{package}={version}"]
    result = subprocess.run(command, cwd=debs, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 and os.geteuid() == 0:
        # a fresh machine has no package lists yet: fetch them once and try again
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=900)
        result = subprocess.run(command, cwd=debs, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(
            f"apt-get download {package}={version} failed (run `apt-get update` first?): "
            f"{result.stderr.strip()[-500:]}"
        )
    for existing in debs.glob(f"{package}_*.deb"):
        if hashlib.sha256(existing.read_bytes()).hexdigest() == sha:
            return existing
    raise RuntimeError(f"{package}={version}: downloaded .deb does not match the pinned SHA-256")


def build(out: Path) -> Path:
    """Build (or reuse) the set in ``out``; returns ``out``. Idempotent and atomic."""
    marker = out / ".complete"
    if marker.exists() and marker.read_text().strip() == BUILD_VERSION:
        return out
    debs = out.parent / "debs"
    tmp = Path(
        tempfile.mkdtemp(prefix="real-photos-", dir=out.parent if out.parent.exists() else None)
    )
    try:
        staging = tmp / "set"
        rows: list[dict[str, str]] = []
        tux_deb = fetch_deb("tuxpaint-stamps-default", debs)
        gc_deb = fetch_deb("gcompris-qt-data", debs)
        for deb in (tux_deb, gc_deb):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        version = PACKAGES["tuxpaint-stamps-default"][0]
        for slug, files in TUX_FILES.items():
            for rel in files:
                src = tmp / "x" / rel
                name = "tux-" + rel[len(TUX) :].replace("/", "_")
                _copy(src.read_bytes(), staging / slug / name)
                row = ("tuxpaint-stamps-default", version, "/" + rel, TUX_LICENCE)
                rows.append(_row(slug, name, *row))
        rcc_cache: dict[str, dict[str, bytes]] = {}
        licences: dict[str, str] = {}
        version = PACKAGES["gcompris-qt-data"][0]
        for slug, entries in GC_FILES.items():
            for rcc, inner in entries:
                if rcc not in rcc_cache:
                    rcc_cache[rcc] = read_rcc((tmp / "x" / GC_RCC / rcc).read_bytes())
                    licences.update(gcompris_licences(rcc_cache[rcc]))
                name = "gc-" + inner.rsplit("/", 2)[-2] + "_" + inner.rsplit("/", 1)[-1]
                _copy(rcc_cache[rcc][inner], staging / slug / name)
                where = f"/{GC_RCC}{rcc}:{inner}"
                licence = licences.get(inner, "GPL-3+ (Debian copyright of gcompris-qt-data)")
                rows.append(_row(slug, name, "gcompris-qt-data", version, where, licence))
        rows.sort(key=lambda r: r["path"])
        with (staging / "manifest.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "category"])
            writer.writerows((r["path"], r["category"]) for r in rows)
        (staging / "PROVENANCE.md").write_text(provenance(rows))
        (staging / ".complete").write_text(BUILD_VERSION + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _copy(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _row(slug, name, package, version, file, licence) -> dict[str, str]:
    return {
        "path": f"{slug}/{name}",
        "category": slug,
        "package": package,
        "version": version,
        "file": file,
        "licence": licence,
    }


def provenance(rows: list[dict[str, str]]) -> str:
    """The PROVENANCE table: one line per photo, counts per category first."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    buf = io.StringIO()
    buf.write(
        "# Real-photo check set: provenance\n\n"
        "Built by `benchmarks/real_photos.py` from two pinned Debian (bookworm) packages, "
        "fetched with `apt-get download` and checked against their SHA-256:\n\n"
    )
    for package, (version, sha) in PACKAGES.items():
        buf.write(f"- `{package}` `{version}` (sha256 `{sha}`)\n")
    buf.write(
        "\nEvery file is a distinct photograph, copied byte for byte (no crops, no augmented "
        "copies). Tux Paint's are cut-out photos on a transparent background (product-photo "
        "style); GCompris' are photos with their natural background. The set is small and its "
        "categories are not a marketplace's: a check set for training mechanics, not a product "
        "metric.\n\n| category | photos |\n|---|---:|\n"
    )
    for slug in sorted(counts):
        buf.write(f"| `{slug}` | {counts[slug]} |\n")
    buf.write(f"| total | {len(rows)} |\n\n| photo | package | version | file | licence |\n")
    buf.write("|---|---|---|---|---|\n")
    for r in rows:
        buf.write(
            f"| `{r['path']}` | {r['package']} | {r['version']} | `{r['file']}` | "
            f"{r['licence'].replace('|', '/')} |\n"
        )
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--provenance", type=Path, help="also copy PROVENANCE.md here")
    args = parser.parse_args(argv)
    out = build(args.out.resolve())
    if args.provenance:
        shutil.copyfile(out / "PROVENANCE.md", args.provenance)
    counts = {d.name: len(list(d.iterdir())) for d in sorted(out.iterdir()) if d.is_dir()}
    print(f"{out}: {sum(counts.values())} photos", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
