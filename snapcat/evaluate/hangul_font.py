"""Korean text that renders on any machine: the report's charts and its HTML carry their own
Hangul font instead of trusting the viewer's (a server, a CI runner or a colleague's laptop without
CJK fonts shows empty boxes for every category label).

The font is NanumGothic (SIL Open Font License) from the ``koreanize-matplotlib`` wheel, located
without importing that package: its import patches matplotlib's global rcParams through the
deprecated ``distutils``. Charts name it per figure; the HTML embeds a subset of it holding only
the characters the page uses (a few KB instead of 4.7 MB).
"""

from __future__ import annotations

import base64
import io
from functools import cache
from importlib.util import find_spec
from pathlib import Path

#: The family name inside NanumGothic.ttf, and the name the report's CSS gives the embedded subset.
FONT_FAMILY = "NanumGothic"
EMBEDDED_FAMILY = "snapcat-hangul"
#: The HTML's font stack: the embedded subset first (its unicode-range holds only the page's
#: Korean characters, so everything else falls through to the system's fonts), then the usual
#: Korean system fonts (for a copy whose data URI was stripped). First, not after system-ui:
#: Chromium resolves system-ui through fontconfig, whose fallback claims every character, so a
#: table cell's Hangul was drawn as empty boxes by DejaVu Sans before the embedded font was asked.
CSS_FONT_STACK = (
    f'"{EMBEDDED_FAMILY}", system-ui, "Noto Sans CJK KR", "Noto Sans KR", '
    '"Apple SD Gothic Neo", "Malgun Gothic", "NanumGothic", sans-serif'
)


@cache
def font_path() -> Path:
    spec = find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("koreanize-matplotlib (the report's Hangul font) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NanumGothic.ttf"
    if not path.is_file():
        raise RuntimeError(f"the report's Hangul font is missing: {path}")
    return path


@cache
def register_with_matplotlib() -> list[str]:
    """Adds the font to matplotlib's font manager once; returns the font family list a figure
    uses (Hangul from NanumGothic, anything it lacks from matplotlib's own DejaVu Sans)."""
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(font_path()))
    return [FONT_FAMILY, "DejaVu Sans"]


def css_font_face(text: str) -> str:
    """An ``@font-face`` rule embedding the subset of the font that covers the Hangul (and other
    non-ASCII characters the font has) in ``text``; empty when ``text`` needs none."""
    wanted = sorted({ch for ch in text if ord(ch) > 0x7F})
    if not wanted:
        return ""
    import logging

    from fontTools import subset

    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)  # "TSI0 NOT subset; dropped"
    options = subset.Options()
    options.flavor = "woff"  # zlib-compressed; woff2 would need brotli
    options.layout_features = ["*"]
    font = subset.load_font(str(font_path()), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(wanted))
    subsetter.subset(font)
    covered = {chr(code) for code in font.getBestCmap()}
    buffer = io.BytesIO()
    subset.save_font(font, buffer, options)
    ranges = ",".join(f"U+{ord(ch):04X}" for ch in wanted if ch in covered)
    if not ranges:
        return ""
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'@font-face {{ font-family: "{EMBEDDED_FAMILY}"; '
        f'src: url(data:font/woff;base64,{data}) format("woff"); unicode-range: {ranges}; }}'
    )
