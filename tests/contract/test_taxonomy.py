"""The taxonomy: loading, name resolution (slug, English, Korean; nested and escaped), class order."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

from snapcat.contract.taxonomy import Taxonomy, TaxonomyError, unescape_label

ALL_SLUGS = (
    "digital-devices",
    "home-appliances",
    "furniture-interior",
    "baby-kids",
    "living-food",
    "sports-leisure",
    "womens-accessories",
    "womens-clothing",
    "mens-fashion",
    "games-hobbies",
    "beauty",
    "pet-supplies",
    "books-tickets-records",
    "plants",
    "used-cars",
    "tutoring-classes",
    "jobs",
    "events",
    "local-business",
    "buying",
    "other",
)


def test_packaged_taxonomy_has_21_categories_19_trainable(taxonomy):
    assert taxonomy.slugs == ALL_SLUGS
    assert set(taxonomy.trainable_slugs) == set(ALL_SLUGS) - {"buying", "other"}
    assert taxonomy.trainable_slugs == tuple(s for s in ALL_SLUGS if s not in ("buying", "other"))
    assert taxonomy["buying"].label == "삽니다"
    assert not taxonomy["other"].trainable
    # Labels are stored NFC, whatever the YAML file's normalization.
    for category in taxonomy.categories:
        assert category.label == unicodedata.normalize("NFC", category.label)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("furniture-interior", "furniture-interior"),
        ("  furniture-interior  ", "furniture-interior"),
        ("Furniture & interior", "furniture-interior"),
        ("FURNITURE & INTERIOR", "furniture-interior"),
        ("가구/인테리어", "furniture-interior"),
        ("가구%2F인테리어", "furniture-interior"),
        ("가구%2f인테리어", "furniture-interior"),
        ("가구／인테리어", "furniture-interior"),
        ("가구∕인테리어", "furniture-interior"),
        ("도서/티켓/음반", "books-tickets-records"),
        ("도서%2F티켓%2F음반", "books-tickets-records"),
        ("Books, tickets & records", "books-tickets-records"),
        ("디지털기기", "digital-devices"),
        ("Digital devices", "digital-devices"),
        ("Women's clothing", "womens-clothing"),
        ("여성의류", "womens-clothing"),
        ("삽니다", "buying"),
        ("기타 중고물품", "other"),
        ("Other used goods", "other"),
        ("other", "other"),
        ("pet-supplies", "pet-supplies"),
        ("반려동물용품", "pet-supplies"),
    ],
)
def test_resolve_names(taxonomy, name, slug):
    assert taxonomy.resolve(name) == slug


@pytest.mark.parametrize("label", ["가구/인테리어", "디지털기기", "도서/티켓/음반", "삽니다"])
def test_resolve_korean_in_nfd_form(taxonomy, label):
    """macOS writes file names decomposed (NFD); they must resolve like the composed form."""
    nfd = unicodedata.normalize("NFD", label)
    assert nfd != label
    assert taxonomy.resolve(nfd) == taxonomy.resolve(label) is not None


@pytest.mark.parametrize(
    "name", ["", "   ", "가구", "인테리어", "도서/티켓", "furniture", "electronics", "%2F", "/"]
)
def test_resolve_unknown_is_none(taxonomy, name):
    assert taxonomy.resolve(name) is None


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["digital-devices"], ("digital-devices", 1)),
        (["digital-devices", "phones"], ("digital-devices", 1)),  # subfolders inside are fine
        (["가구", "인테리어"], ("furniture-interior", 2)),
        (["가구", "인테리어", "의자"], ("furniture-interior", 2)),
        (["도서", "티켓", "음반"], ("books-tickets-records", 3)),
        (["도서", "티켓", "음반", "LP"], ("books-tickets-records", 3)),
        (["가구%2F인테리어"], ("furniture-interior", 1)),
        (["가구／인테리어", "sofa"], ("furniture-interior", 1)),
        (["도서%2F티켓%2F음반"], ("books-tickets-records", 1)),
        (["도서", "티켓"], None),
        (["가구"], None),
        (["unknown", "digital-devices"], None),  # only leading components name a category
        ([], None),
    ],
)
def test_resolve_path(taxonomy, parts, expected):
    assert taxonomy.resolve_path(parts) == expected


def test_resolve_path_prefers_the_longest_label():
    """Where one label is a prefix of another, the deeper folder names the longer one."""
    taxonomy = Taxonomy.from_dict(
        {
            "version": "t",
            "categories": [
                {"slug": "books", "label": "도서", "name": "Books", "trainable": True},
                {"slug": "tickets", "label": "도서/티켓", "name": "Tickets", "trainable": True},
                {"slug": "btr", "label": "도서/티켓/음반", "name": "BTR", "trainable": True},
            ],
        }
    )
    assert taxonomy.resolve_path(["도서", "티켓", "음반", "x"]) == ("btr", 3)
    assert taxonomy.resolve_path(["도서", "티켓", "x"]) == ("tickets", 2)
    assert taxonomy.resolve_path(["도서", "소설"]) == ("books", 1)


def test_unescape_label():
    assert unescape_label("가구%2F인테리어") == "가구/인테리어"
    assert unescape_label("도서／티켓∕음반") == "도서/티켓/음반"
    nfd = unicodedata.normalize("NFD", "가구%2F인테리어")
    assert unescape_label(nfd) == "가구/인테리어"


def test_class_order_is_taxonomy_order_not_input_order(taxonomy):
    assert taxonomy.class_order() == list(taxonomy.trainable_slugs)
    present = ["plants", "digital-devices", "books-tickets-records"]
    assert taxonomy.class_order(present) == [
        "digital-devices",
        "books-tickets-records",
        "plants",
    ]
    assert taxonomy.class_order(reversed(present)) == taxonomy.class_order(present)


def test_class_order_refuses_non_trainable_and_unknown(taxonomy):
    with pytest.raises(TaxonomyError, match="buying"):
        taxonomy.class_order(["plants", "buying"])
    with pytest.raises(TaxonomyError, match="no-such"):
        taxonomy.class_order(["no-such"])


def test_dump_and_load_round_trip(taxonomy, tmp_path):
    path = tmp_path / "taxonomy.yaml"
    taxonomy.dump(path)
    assert "가구/인테리어" in path.read_text("utf-8")  # readable, not \u-escaped
    again = Taxonomy.load(path)
    assert again == taxonomy
    assert again.class_order() == taxonomy.class_order()


def _raw(*categories, version="t1"):
    return {"version": version, "categories": list(categories)}


def _cat(slug, label, name, trainable=True):
    return {"slug": slug, "label": label, "name": name, "trainable": trainable}


def test_from_dict_validates():
    ok = Taxonomy.from_dict(_raw(_cat("a-b", "가", "A b"), _cat("c", "나", "C", False)))
    assert ok.trainable_slugs == ("a-b",)
    with pytest.raises(TaxonomyError, match="version"):
        Taxonomy.from_dict({"categories": []})
    with pytest.raises(TaxonomyError, match="missing a field"):
        Taxonomy.from_dict(_raw({"slug": "a", "label": "가", "name": "A"}))
    with pytest.raises(TaxonomyError, match="lower-case"):
        Taxonomy.from_dict(_raw(_cat("Bad Slug", "가", "A")))
    # Two categories one name could mean: refused rather than resolved arbitrarily.
    with pytest.raises(TaxonomyError, match="ambiguous"):
        Taxonomy.from_dict(_raw(_cat("a", "가", "Same"), _cat("b", "나", "same")))
    with pytest.raises(TaxonomyError, match="ambiguous"):
        Taxonomy.from_dict(_raw(_cat("a", "가/나", "A"), _cat("b", "가／나", "B")))


def test_table_lists_every_category_with_class_indices(taxonomy):
    table = taxonomy.table()
    lines = table.splitlines()
    for index, slug in enumerate(taxonomy.trainable_slugs):
        row = next(line for line in lines if f" {slug} " in line)
        assert row.split()[0] == str(index)
    for slug in ("buying", "other"):
        row = next(line for line in lines if f" {slug} " in line)
        assert row.split()[0] == "-" and row.rstrip().endswith("no")
    assert lines[-1] == f"taxonomy version {taxonomy.version}: 19 trainable"


def test_cli_taxonomy_lists_all_slugs():
    result = subprocess.run(
        [sys.executable, "-m", "snapcat.cli", "taxonomy"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for slug in ALL_SLUGS:
        assert slug in result.stdout
    assert "가구/인테리어" in result.stdout


def test_cli_taxonomy_json_round_trips(taxonomy):
    import json

    result = subprocess.run(
        [sys.executable, "-m", "snapcat.cli", "taxonomy", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Taxonomy.from_dict(json.loads(result.stdout)) == taxonomy
