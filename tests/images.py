"""Reference images: a picture under test must match its committed PNG pixel for pixel.

To make or renew a reference, run the test with ``UPDATE_REFERENCES=1``, then *look at* the
new PNG in ``tests/reference/`` before committing it: the reference is only as right as the
person who checked it.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageChops

REFERENCE = Path(__file__).resolve().parent / "reference"


def assert_matches_reference(image: Image.Image, name: str) -> None:
    path = REFERENCE / name
    if os.environ.get("UPDATE_REFERENCES") == "1":
        image.save(path, optimize=True)
    assert path.exists(), f"no reference image {path}: make it with UPDATE_REFERENCES=1 and look at it"
    with Image.open(path) as reference:
        reference.load()
    # A 1-bit picture is compared as bits; a palette picture as the colours it shows.
    mode = "1" if image.mode == "1" else "RGB"
    got, want = image.convert(mode), reference.convert(mode)
    assert got.size == want.size, f"{name}: size {got.size} differs from the reference's {want.size}"
    if got.tobytes() != want.tobytes():
        box = ImageChops.difference(got.convert("RGB"), want.convert("RGB")).getbbox()
        raise AssertionError(f"{name}: differs from the reference within {box}")
