"""The explain signature's heat map is about the object, not only the right shape.

A model that really learned (EfficientNet-Lite0's ImageNet features, frozen, with a softmax head
trained on them) classifies Tux Paint's cut-out product photos (real photographs on a transparent
background, from the real-photo set: :mod:`benchmarks.real_photos`) pasted at random places and
sizes on plain and on busy backgrounds (GCompris' photographs, the background uncorrelated with
the label). Held-out objects are then pasted into a known box, one quadrant of the photo, on a
plain and on a busy background (a photograph of another category), and the exported SavedModel's
``explain`` signature (what TF Serving runs) is asked about the object's class: the heat-map mass
and its peak must fall inside the box far above the chance baseline (the box's share of the
photo, 1/4: what a heat map blind to the object would put there on average), over all photos and
over those the model gets right (where the explanation is of a decision it actually made).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.long, pytest.mark.timeout(1200)]

SIZE = 224
BOX = SIZE // 2  # the test box: one quadrant, 7x7 of the 14x14 heat map
CLASSES = ("games-hobbies", "living-food", "pet-supplies", "plants", "sports-leisure")


def _cutouts(photos: Path) -> dict[str, list]:
    from PIL import Image

    found = {}
    for slug in CLASSES:
        images = []
        for path in sorted((photos / slug).glob("tux-*.png")):
            with Image.open(path) as image:
                image = image.convert("RGBA")
            bbox = image.getchannel("A").getbbox()
            if bbox and min(bbox[2] - bbox[0], bbox[3] - bbox[1]) >= 24:
                images.append(image.crop(bbox))
        found[slug] = images
    return found


def _backgrounds(photos: Path) -> list[tuple[str, object]]:
    from PIL import Image, ImageOps

    found = []
    for path in sorted(photos.glob("*/gc-*")):
        with Image.open(path) as image:
            found.append((path.parent.name, ImageOps.fit(image.convert("RGB"), (SIZE, SIZE))))
    return found


def _compose(cutout, background, box: tuple[int, int, int]) -> bytes:
    """``cutout`` fitted into the square ``box`` (x, y, side), centred, on ``background`` (an
    RGB image or a plain colour); JPEG bytes."""
    from PIL import Image

    x, y, side = box
    canvas = (
        background.copy()
        if isinstance(background, Image.Image)
        else Image.new("RGB", (SIZE, SIZE), background)
    )
    item = cutout.copy()
    item.thumbnail((side, side), Image.Resampling.LANCZOS)
    canvas.paste(item, (x + (side - item.width) // 2, y + (side - item.height) // 2), item)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_heat_map_mass_falls_on_the_object(real_photo_set, tmp_path):
    photos = real_photo_set
    import keras

    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.export import ServingModel, export_model
    from snapcat.train.modeling import ModelSpec, build_model
    from snapcat.train.tf_image import decode_canonical

    rng = random.Random(26)
    keras.utils.set_random_seed(26)
    cutouts = _cutouts(photos)
    backgrounds = _backgrounds(photos)
    train, held_out = [], []
    for label, slug in enumerate(CLASSES):
        items = cutouts[slug][:]
        rng.shuffle(items)
        cut = max(2, len(items) // 3)
        held_out += [(label, slug, item) for item in items[:cut]]
        train += [(label, slug, item) for item in items[cut:]]

    def random_background(slug):
        if rng.random() < 0.5:
            return tuple(rng.randrange(256) for _ in range(3))
        return rng.choice([b for s, b in backgrounds if s != slug])

    # Training composites: random place, size and background, so only the object predicts.
    # Rarer classes get more copies: every class ~120 composites.
    samples, labels = [], []
    for label, slug, item in train:
        copies = max(2, 120 // sum(1 for lab, *_ in train if lab == label))
        for _ in range(copies):
            side = rng.randrange(80, 176)
            box = (rng.randrange(SIZE - side + 1), rng.randrange(SIZE - side + 1), side)
            samples.append(_compose(item, random_background(slug), box))
            labels.append(label)

    model, backbone = build_model(
        ModelSpec("efficientnet-lite0", len(CLASSES), image_size=SIZE, weights="imagenet")
    )
    rescale, pool = model.get_layer("backbone_preprocessing"), model.get_layer("avg_pool")

    def pooled(images: list[bytes]) -> np.ndarray:
        import tensorflow as tf

        out = []
        for start in range(0, len(images), 32):
            pixels = tf.stack([decode_canonical(b, SIZE) for b in images[start : start + 32]])
            out.append(pool(backbone(rescale(pixels), training=False)).numpy())
        return np.concatenate(out)

    head = keras.Sequential(
        [keras.Input((backbone.output.shape[-1],)), keras.layers.Dense(len(CLASSES), "softmax")]
    )
    head.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    head.fit(pooled(samples), np.array(labels), epochs=60, batch_size=32, verbose=0)
    model.get_layer("probabilities").set_weights(head.layers[-1].get_weights())

    taxonomy = Taxonomy.load()
    known = [s for s in CLASSES if s in taxonomy.slugs]
    assert known == list(CLASSES)
    served = ServingModel(
        export_model(
            model,
            str(tmp_path / "model"),
            classes=list(CLASSES),
            image_size=SIZE,
            jpeg_quality=90,
            backbone="efficientnet-lite0",
        )
    )

    # Held-out objects in a known quadrant, on a plain and on a busy background.
    results = {}
    for kind in ("plain", "busy"):
        photos_in, boxes, asked = [], [], []
        for label, slug, item in held_out:
            qx, qy = rng.randrange(2), rng.randrange(2)
            background = (
                (236, 236, 236)
                if kind == "plain"
                else rng.choice([b for s, b in backgrounds if s != slug])
            )
            photos_in.append(_compose(item, background, (qx * BOX, qy * BOX, BOX)))
            boxes.append((qx, qy))
            asked.append(label)
        spec = served.info.spec
        canonical = [normalize_image(p, spec) for p in photos_in]
        answer = served.explain(canonical, asked)
        heat = answer["heat_map"]
        cells = heat.shape[1] // 2
        inside, peaks = [], []
        for row, (qx, qy) in zip(heat, boxes, strict=True):
            quadrant = row[qy * cells : (qy + 1) * cells, qx * cells : (qx + 1) * cells]
            inside.append(float(quadrant.sum() / max(row.sum(), 1e-9)))
            py, px = np.unravel_index(row.argmax(), row.shape)
            peaks.append(py // cells == qy and px // cells == qx)
        right = answer["probabilities"].argmax(axis=1) == np.array(asked)
        inside, peaks = np.array(inside), np.array(peaks)
        results[kind] = (
            inside.mean(),
            peaks.mean(),
            right.mean(),
            inside[right].mean(),
            peaks[right].mean(),
        )
    print(f"\nheld-out objects: {len(held_out)}; chance share of the box: 0.25")
    for kind, (mass, peak, accuracy, mass_right, peak_right) in results.items():
        print(
            f"{kind}: heat mass in box {mass:.2f}, peak in box {peak:.2f}, top-1 {accuracy:.2f}; "
            f"where right: mass {mass_right:.2f}, peak {peak_right:.2f}"
        )

    # Measured (seeded): plain mass 0.61 / peak 0.79 (0.67 / 0.86 where right), busy 0.51 / 0.67
    # (0.57 / 0.76), top-1 0.86 / 0.77. The bounds keep a margin under those, far above chance.
    for kind, (mass, peak, accuracy, mass_right, peak_right) in results.items():
        assert accuracy >= 0.5, (kind, results)  # it learned (chance: 0.2)
        assert mass >= 0.45 and mass_right >= 0.5, (kind, results)  # chance: 0.25
        assert peak >= 0.55 and peak_right >= 0.65, (kind, results)  # chance: 0.25
