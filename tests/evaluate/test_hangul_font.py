"""The report's own Hangul font: a subset embedded in the page that covers every Korean character
it shows, so no viewer's missing CJK fonts turn category labels into empty boxes."""

from __future__ import annotations

import base64
import io
import re

from snapcat.evaluate.hangul_font import CSS_FONT_STACK, EMBEDDED_FAMILY, css_font_face, font_path


def _embedded_font(rule: str):
    from fontTools.ttLib import TTFont

    data = re.search(r"base64,([A-Za-z0-9+/=]+)\)", rule).group(1)
    return TTFont(io.BytesIO(base64.b64decode(data)))


def test_the_subset_covers_every_korean_character_of_the_page(taxonomy):
    text = "".join(taxonomy[slug].label for slug in taxonomy.slugs) + " 예측 (predicted) 정답"
    rule = css_font_face(text)
    assert f'font-family: "{EMBEDDED_FAMILY}"' in rule
    covered = {chr(code) for code in _embedded_font(rule).getBestCmap()}
    hangul = {ch for ch in text if "\uac00" <= ch <= "\ud7a3"}
    assert hangul and hangul <= covered
    assert len(rule) < 100_000 < font_path().stat().st_size  # a subset, not the 4.7 MB font
    ranges = set(re.search(r"unicode-range: ([^;]+);", rule).group(1).split(","))
    assert {f"U+{ord(ch):04X}" for ch in hangul} <= ranges


def test_an_ascii_page_embeds_nothing_and_the_stack_names_korean_fonts():
    assert css_font_face("top-1 accuracy 0.74") == ""
    assert f'"{EMBEDDED_FAMILY}"' in CSS_FONT_STACK and "Noto Sans CJK KR" in CSS_FONT_STACK
