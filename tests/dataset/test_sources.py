"""Input discovery: folders named by slug, English name or Korean label (nested, escaped, NFC or
NFD), manifests (CSV, JSONL), unknown and non-trainable categories; every file accounted for."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from snapcat.dataset.sources import SourceError, discover


def touch(root: Path, *relative: str) -> None:
    """Creates (empty) files: discovery only lists names, it never opens them."""
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def by_display(found) -> dict[str, str]:
    return {item.display: item.slug for item in found.items}


def test_folder_names_resolve_by_slug_name_label_nested_and_escaped(tmp_path, taxonomy):
    touch(
        tmp_path,
        "digital-devices/a.jpg",
        "Home Appliances/b.jpg",  # English name, any case
        "가구/인테리어/c.jpg",  # label nested as two folders
        "가구/인테리어/의자/d.jpg",  # ... with a subfolder of its own
        "도서/티켓/음반/e.jpg",  # three levels
        "유아동%2F유아도서/f.jpg",  # escaped
        "스포츠／레저/g.jpg",  # full-width slash
        "뷰티∕미용/h.jpg",  # division slash
        "식물/i.jpg",  # plain Korean label
        "plants/sub/deeper/j.jpg",  # subfolders of a category are fine
    )
    found = discover(str(tmp_path), taxonomy)
    assert by_display(found) == {
        "digital-devices/a.jpg": "digital-devices",
        "Home Appliances/b.jpg": "home-appliances",
        "가구/인테리어/c.jpg": "furniture-interior",
        "가구/인테리어/의자/d.jpg": "furniture-interior",
        "도서/티켓/음반/e.jpg": "books-tickets-records",
        "유아동%2F유아도서/f.jpg": "baby-kids",
        "스포츠／레저/g.jpg": "sports-leisure",
        "뷰티∕미용/h.jpg": "beauty",
        "식물/i.jpg": "plants",
        "plants/sub/deeper/j.jpg": "plants",
    }
    assert found.rejected == []
    assert found.unknown == {}
    # Items are sorted by display path, so later stages never depend on listing order.
    assert [i.display for i in found.items] == sorted(i.display for i in found.items)
    for item in found.items:
        assert Path(item.uri).is_file()


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_korean_file_and_folder_names_in_both_normal_forms(tmp_path, taxonomy, form):
    def name(text: str) -> str:
        return unicodedata.normalize(form, text)

    touch(
        tmp_path,
        f"{name('디지털기기')}/{name('사진 한장')}.jpg",
        f"{name('가구')}/{name('인테리어')}/{name('의자')}.png",
        f"{name('도서%2F티켓%2F음반')}/{name('책')}.jpg",
        f"{name('삽니다')}/{name('구해요')}.jpg",
    )
    if form == "NFD":  # the file system really holds decomposed names
        assert name("디지털기기") in [p.name for p in tmp_path.iterdir()]
        assert "디지털기기" not in [p.name for p in tmp_path.iterdir()]
    found = discover(str(tmp_path), taxonomy)
    # Reports show NFC whatever the disk holds; the URI is the real (openable) path.
    assert by_display(found) == {
        "디지털기기/사진 한장.jpg": "digital-devices",
        "가구/인테리어/의자.png": "furniture-interior",
        "도서%2F티켓%2F음반/책.jpg": "books-tickets-records",
    }
    for item in found.items:
        assert Path(item.uri).is_file()
    assert found.non_trainable == {"buying": 1}
    assert found.rejected == [("삽니다/구해요.jpg", "non-trainable-category")]


def test_unknown_folders_are_an_error_listing_them(tmp_path, taxonomy):
    touch(
        tmp_path,
        "plants/a.jpg",
        "electronics/1.jpg",
        "electronics/2.jpg",
        "가구/c.jpg",  # half of a label is not a category
    )
    with pytest.raises(SourceError) as info:
        discover(str(tmp_path), taxonomy)
    message = str(info.value)
    assert "'electronics' (2 files)" in message and "'가구' (1 files)" in message
    assert "plants" not in message
    assert "--ignore-unknown" in message


def test_ignore_unknown_rejects_their_files(tmp_path, taxonomy):
    touch(tmp_path, "plants/a.jpg", "electronics/1.jpg", "electronics/2.jpg")
    found = discover(str(tmp_path), taxonomy, ignore_unknown=True)
    assert by_display(found) == {"plants/a.jpg": "plants"}
    assert found.rejected == [
        ("electronics/1.jpg", "unknown-category"),
        ("electronics/2.jpg", "unknown-category"),
    ]
    assert found.unknown == {"electronics": 2}


def test_non_trainable_categories_skipped_and_counted(tmp_path, taxonomy):
    touch(
        tmp_path,
        "buying/a.jpg",
        "삽니다/b.jpg",
        "other/c.jpg",
        "기타 중고물품/d.jpg",
        "plants/e.jpg",
    )
    found = discover(str(tmp_path), taxonomy)
    assert by_display(found) == {"plants/e.jpg": "plants"}
    assert found.non_trainable == {"buying": 2, "other": 2}
    assert {reason for _, reason in found.rejected} == {"non-trainable-category"}
    assert len(found.rejected) == 4
    assert found.category_dirs == {"buying", "other", "plants"}


def test_files_at_the_root_are_rejected_not_dropped(tmp_path, taxonomy):
    touch(tmp_path, "README.md", "photo.jpg", "plants/a.jpg")
    found = discover(str(tmp_path), taxonomy)
    assert sorted(found.rejected) == [
        ("README.md", "no-category-folder"),
        ("photo.jpg", "no-category-folder"),
    ]
    assert len(found.items) + len(found.rejected) == 3


def test_empty_category_folder_is_named(tmp_path, taxonomy):
    touch(tmp_path, "plants/a.jpg")
    (tmp_path / "digital-devices").mkdir()
    (tmp_path / "가구" / "인테리어").mkdir(parents=True)
    found = discover(str(tmp_path), taxonomy)
    assert found.category_dirs == {"plants", "digital-devices", "furniture-interior"}
    assert len(found.items) == 1


def test_missing_input_is_an_error(tmp_path, taxonomy):
    with pytest.raises(SourceError, match="not a folder"):
        discover(str(tmp_path / "nope"), taxonomy)


# ------------------------------------------------------------------------- manifests
def test_csv_manifest_relative_and_absolute_paths(tmp_path, taxonomy):
    touch(tmp_path, "photos/a.jpg", "photos/b.jpg")
    elsewhere = tmp_path / "elsewhere" / "c.jpg"
    touch(tmp_path, "elsewhere/c.jpg")
    manifest = tmp_path / "photos" / "labels.csv"
    manifest.write_text(
        "\ufeffpath,category,notes\n"  # BOM, extra column
        "a.jpg,디지털기기,x\n"
        "b.jpg, Furniture & interior ,\n"
        f"{elsewhere},가구%2F인테리어,\n"
        "missing.jpg,plants,\n"
        "d.jpg,buying,\n"
        ",plants,\n",
        "utf-8",
    )
    # Issue 25: a path outside the manifest's folder is refused unless a root allows it.
    found = discover(str(manifest), taxonomy)  # --input may be the manifest itself
    assert (str(elsewhere), "outside-input") in found.rejected
    found = discover(str(manifest), taxonomy, allow_roots=[str(tmp_path / "elsewhere")])
    assert by_display(found) == {
        "a.jpg": "digital-devices",
        "b.jpg": "furniture-interior",
        str(elsewhere): "furniture-interior",
        "missing.jpg": "plants",  # existence is checked by the worker that reads it
    }
    uris = {item.display: item.uri for item in found.items}
    assert uris["a.jpg"] == str(tmp_path / "photos" / "a.jpg")
    assert uris[str(elsewhere)] == str(elsewhere)
    assert sorted(found.rejected) == [
        ("(empty path)", "missing-path"),
        ("d.jpg", "non-trainable-category"),
    ]


def test_manifest_relative_paths_resolve_against_input(tmp_path, taxonomy):
    touch(tmp_path, "data/plants/a.jpg")
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,category\nplants/a.jpg,plants\n", "utf-8")
    found = discover(str(tmp_path / "data"), taxonomy, manifest=str(manifest))
    assert [item.uri for item in found.items] == [str(tmp_path / "data" / "plants" / "a.jpg")]


def test_jsonl_manifest(tmp_path, taxonomy):
    decomposed = unicodedata.normalize("NFD", "책상.jpg")  # a name as macOS writes it
    touch(tmp_path, "a.jpg", "b.jpg", "c.jpg", "사진.jpg", decomposed)
    rows = [
        {"path": "a.jpg", "category": "plants"},
        {"path": "b.jpg", "category": "도서/티켓/음반", "extra": 1},
        {"path": "c.jpg", "category": "other"},
        {"path": "사진.jpg", "category": "식물"},
        {"path": decomposed, "category": "가구／인테리어"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", "utf-8"
    )
    found = discover(str(manifest), taxonomy)
    assert by_display(found) == {
        "a.jpg": "plants",
        "b.jpg": "books-tickets-records",
        "사진.jpg": "plants",
        "책상.jpg": "furniture-interior",  # reported NFC
    }
    for item in found.items:  # ...but opened by the exact name on disk
        assert Path(item.uri).is_file(), item.uri
    assert found.non_trainable == {"other": 1}


def test_manifest_unknown_categories(tmp_path, taxonomy):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,category\na.jpg,toys\nb.jpg,toys\nc.jpg,\nd.jpg,plants\n", "utf-8")
    with pytest.raises(SourceError) as info:
        discover(str(manifest), taxonomy)
    assert "'toys' (2 files)" in str(info.value) and "'(empty)' (1 files)" in str(info.value)
    found = discover(str(manifest), taxonomy, ignore_unknown=True)
    assert by_display(found) == {"d.jpg": "plants"}
    assert sorted(r for _, r in found.rejected) == ["unknown-category"] * 3


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("m.csv", "file,label\na.jpg,plants\n", "header"),
        ("m.csv", "", "header"),
    ],
)
def test_malformed_manifest_is_an_error(tmp_path, taxonomy, name, text, match):
    manifest = tmp_path / name
    manifest.write_text(text, "utf-8")
    with pytest.raises(SourceError, match=match):
        discover(str(manifest), taxonomy)


def test_malformed_jsonl_rows_are_refused_and_the_rest_go_on(tmp_path, taxonomy):
    """Issue 25: one bad row used to abort the whole run."""
    touch(tmp_path, "a.jpg")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "a.jpg", "category": "plants"}\nnot json\n{"path": "b.jpg"}\n["x", "y"]\n',
        "utf-8",
    )
    found = discover(str(manifest), taxonomy)
    assert [i.display for i in found.items] == ["a.jpg"]
    assert found.rejected == [(f"(line {n})", "bad-manifest-row") for n in (2, 3, 4)]


def test_manifest_rows_stay_inside_the_allowed_roots(tmp_path, taxonomy):
    """Issue 25: ``../``, absolute paths, ``file://``, ``zip://``, ``http://``, NUL bytes,
    symlinks out and FIFOs were all opened (or aborted/hung the run). Now each is a refused row
    with its reason, and the good rows go on."""
    touch(tmp_path, "in/a.jpg", "in/sub/b.jpg", "secret/s.jpg", "extra/e.jpg")
    (tmp_path / "in" / "link.jpg").symlink_to(tmp_path / "secret" / "s.jpg")
    (tmp_path / "in" / "inner-link.jpg").symlink_to(tmp_path / "in" / "a.jpg")
    os.mkfifo(tmp_path / "in" / "fifo.jpg")
    (tmp_path / "in" / "folder.jpg").mkdir()
    rows = {
        "a.jpg": None,
        "sub/../sub/b.jpg": None,  # '..' that stays inside
        "inner-link.jpg": None,  # a symlink inside the input
        "../secret/s.jpg": "outside-input",
        str(tmp_path / "secret" / "s.jpg"): "outside-input",
        f"file://{tmp_path}/secret/s.jpg": "outside-input",
        "link.jpg": "outside-input",  # a symlink out
        "zip://s.jpg::file:///tmp/x.zip": "scheme-not-allowed",
        "http://127.0.0.1:9/x.jpg": "scheme-not-allowed",
        "gs://bucket/x.jpg": "scheme-not-allowed",
        "a\x00.jpg": "nul-byte",
        "fifo.jpg": "not-a-regular-file",
        "folder.jpg": "not-a-regular-file",
        str(tmp_path / "extra" / "e.jpg"): None,  # allowed by --allow-root
    }
    manifest = tmp_path / "in" / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": p, "category": "plants"}) + "\n" for p in rows), "utf-8"
    )
    found = discover(str(manifest), taxonomy, allow_roots=[str(tmp_path / "extra")])
    refused = dict(found.rejected)
    for path, reason in rows.items():
        shown = unicodedata.normalize("NFC", path.replace("\x00", "\\0"))
        assert refused.get(shown) == reason, (path, refused.get(shown))
    assert len(found.items) == 4
    assert all(str(tmp_path / "secret") not in i.uri for i in found.items)


def test_the_worker_refuses_a_file_turned_into_a_fifo(tmp_path):
    """Checked when the manifest is read, and again when the worker opens the file: a FIFO
    hung the run."""
    from snapcat.dataset.manifest_policy import NotRegularFile, read_local_regular

    os.mkfifo(tmp_path / "f.jpg")
    with pytest.raises(NotRegularFile):
        read_local_regular(str(tmp_path / "f.jpg"), 100)
    (tmp_path / "ok.jpg").write_bytes(b"x" * 10)
    assert read_local_regular(str(tmp_path / "ok.jpg"), 4) == b"x" * 5


def test_a_manifest_is_streamed_in_bounded_memory(tmp_path, taxonomy):
    """Issue 25: 1,000,000 rows took 1.79 GB: the whole text, then a list of every row, were
    held. Rows are now streamed: reading 4x the rows does not grow the reader's peak memory
    (every row here is refused, so nothing is kept per row but its rejection)."""
    import tracemalloc

    from snapcat.dataset.sources import Discovery, _read_manifest_rows

    def peak(rows: int) -> int:
        manifest = tmp_path / f"m{rows}.csv"
        with open(manifest, "w", encoding="utf-8") as handle:
            handle.write("path,category\n")
            for i in range(rows):
                handle.write(f"photos/{i:07d}-{'x' * 60}.jpg,plants\n")
        tracemalloc.start()
        count = sum(1 for _ in _read_manifest_rows(str(manifest), Discovery()))
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == rows
        return high

    small, large = peak(25_000), peak(100_000)
    assert large < small * 1.5 + 256 * 1024, (small, large)  # was: about 4x


def test_sample_manifest_agrees_with_its_folders(sample_dir, taxonomy):
    by_folder = discover(str(sample_dir), taxonomy)
    by_manifest = discover(str(sample_dir / "manifest.csv"), taxonomy)
    assert by_display(by_folder) == by_display(by_manifest)
    assert len(by_folder.items) == sum(
        1 for p in sample_dir.glob("*/*") if p.is_file() and p.suffix == ".jpg"
    )
    # The two files at its root are reported, not silently dropped.
    assert sorted(by_folder.rejected) == [
        ("PROVENANCE.md", "no-category-folder"),
        ("manifest.csv", "no-category-folder"),
    ]


# ------------------------------------------------------------------------------ fingerprint
def test_fingerprint_changes_exactly_when_the_photos_do(tmp_path):
    import os

    from conftest import make_tree, write_image

    from snapcat.dataset.sources import fingerprint

    make_tree(tmp_path / "in", {"plants": 2, "furniture-interior": 1})
    first = fingerprint(str(tmp_path / "in"))
    assert first.startswith("files=3;") and fingerprint(str(tmp_path / "in")) == first

    photo = tmp_path / "in" / "plants" / "img_000.jpg"
    stat = photo.stat()
    photo.write_bytes(photo.read_bytes()[:-10] + b"0123456789")  # same size, new bytes
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = fingerprint(str(tmp_path / "in"))
    assert changed != first

    write_image(tmp_path / "in" / "plants" / "new.jpg")
    added = fingerprint(str(tmp_path / "in"))
    assert added.startswith("files=4;") and added != changed
    (tmp_path / "in" / "plants" / "new.jpg").unlink()
    assert fingerprint(str(tmp_path / "in")) == changed


def test_fingerprint_of_a_manifest_covers_the_manifest(tmp_path):
    from conftest import make_tree

    from snapcat.dataset.sources import SourceError, fingerprint

    make_tree(tmp_path / "in", {"plants": 1})
    manifest = tmp_path / "in" / "labels.csv"
    manifest.write_text("path,category\nplants/img_000.jpg,plants\n")
    first = fingerprint(str(manifest))
    manifest.write_text("path,category\nplants/img_000.jpg,furniture-interior\n")
    assert fingerprint(str(manifest)) != first
    with pytest.raises(SourceError, match="not a folder"):
        fingerprint(str(tmp_path / "missing"))


def test_fingerprint_of_an_object_store_listing():
    """Through fsspec's memory filesystem, as prepare's object-store test does."""
    import fsspec

    from snapcat.dataset.sources import fingerprint

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket-fp/photos/plants/a.jpg", b"a" * 10)
    fs.pipe("/bucket-fp/photos/plants/b.jpg", b"b" * 10)
    try:
        first = fingerprint("memory://bucket-fp/photos")
        fs.pipe("/bucket-fp/photos/plants/b.jpg", b"c" * 11)
        assert fingerprint("memory://bucket-fp/photos") != first
    finally:
        fs.rm("/bucket-fp", recursive=True)


def test_folder_inputs_refuse_symlinks_that_leave_the_input(tmp_path, taxonomy):
    """As a manifest's rows are: a file or a folder linked from outside the input is refused
    (``outside-input``), not read into the dataset; a symlink that stays inside is a photo."""
    touch(tmp_path, "in/plants/a.jpg", "secret/s.jpg", "secret/more/m.jpg")
    (tmp_path / "in" / "plants" / "link.jpg").symlink_to(tmp_path / "secret" / "s.jpg")
    (tmp_path / "in" / "plants" / "inner.jpg").symlink_to(tmp_path / "in" / "plants" / "a.jpg")
    (tmp_path / "in" / "plants" / "folder").symlink_to(tmp_path / "secret" / "more")
    found = discover(str(tmp_path / "in"), taxonomy)
    assert [i.display for i in found.items] == ["plants/a.jpg", "plants/inner.jpg"]
    assert dict(found.rejected) == {
        "plants/link.jpg": "outside-input",
        "plants/folder": "outside-input",
    }
