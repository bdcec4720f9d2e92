"""Rasterise a scene in one of two styles.

- source: a flat, light, slightly tinted background; flat-filled objects.
- shift: a textured background (low-frequency blotches plus stripes), darker outlines, dimmer
  warm lighting and pixel noise. Hues are not rotated, but the warm light moves some colours
  toward their neighbours (mostly yellow toward orange; bench/augment_colour_names.py measures it).

Drawn at 2x and box-downsampled for anti-aliasing. All randomness comes from `seed`.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.synthetic.vocab import COLOURS

SUPERSAMPLE = 2


def render_scene(scene: dict, image_size: int, seed: int, text: str = "") -> Image.Image:
    """Render `scene` (see scene.py) to an RGB image of image_size x image_size pixels."""
    rng = np.random.default_rng(seed)
    side = image_size * SUPERSAMPLE
    shift = scene["style"] == "shift"
    bg = _shift_background(rng, side) if shift else _source_background(rng, side)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(c) for c in np.clip(np.array(COLOURS[obj["colour"]]) + jitter, 0, 255))
        outline = tuple(int(c * 0.45) for c in fill) if shift else None
        _draw_shape(draw, obj["shape"], obj["x"] * side, obj["y"] * side, obj["r"] * side, fill, outline, side)
    if text:
        _draw_text(draw, rng, text, side)
    img = img.resize((image_size, image_size), Image.Resampling.BOX)
    if shift:
        img = _shift_lighting(rng, img)
    return img


def object_map(scene: dict, image_size: int) -> np.ndarray:
    """(side, side) uint8 map at render_scene's drawing resolution (side = image_size *
    SUPERSAMPLE): k + 1 where scene["objects"][k] is drawn, 0 on the background; later objects
    are drawn over earlier ones, as in render_scene (the world's objects do not overlap)."""
    side = image_size * SUPERSAMPLE
    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    for k, obj in enumerate(scene["objects"]):
        _draw_shape(draw, obj["shape"], obj["x"] * side, obj["y"] * side, obj["r"] * side, k + 1, None, side)
    return np.asarray(img)


def encode_jpeg(img: Image.Image, quality: int = 92) -> bytes:
    """Deterministic JPEG bytes (fixed quality and subsampling, no metadata)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buf.getvalue()


def _source_background(rng: np.random.Generator, side: int) -> np.ndarray:
    base = rng.integers(222, 246) + rng.integers(-6, 7, size=3)
    return np.broadcast_to(np.clip(base, 0, 255).astype(np.uint8), (side, side, 3)).copy()


def _shift_background(rng: np.random.Generator, side: int) -> np.ndarray:
    # Greyish blotches with a mild tint: busy enough to shift the style, never a colour cue.
    cells = rng.random((6, 6, 1)) * 90 + 125 + rng.normal(0, 14, size=(6, 6, 3))
    blotch = Image.fromarray(np.clip(cells, 0, 255).astype(np.uint8), "RGB")
    bg = np.asarray(blotch.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 14) * SUPERSAMPLE
    yy, xx = _grid(side)
    stripes = 18 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    return np.clip(bg + stripes[..., None], 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _grid(side: int) -> np.ndarray:
    return np.mgrid[0:side, 0:side].astype(np.float32)


def _shift_lighting(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    warm = np.array([1.0, 0.93, 0.82], dtype=np.float32) * rng.uniform(0.82, 0.92)  # dim, warm lamp
    arr = arr * warm + rng.normal(0, 9, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _polygon(cx: float, cy: float, radii: List[float], start: float) -> List[Tuple[float, float]]:
    n = len(radii)
    return [(cx + r * math.cos(start + 2 * math.pi * k / n), cy + r * math.sin(start + 2 * math.pi * k / n))
            for k, r in enumerate(radii)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, outline, side: int) -> None:
    width = max(1, side // 64) if outline else 0
    box = (cx - r, cy - r, cx + r, cy + r)
    up = -math.pi / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(r * 0.38)))
        if outline:
            draw.ellipse(box, outline=outline, width=width)
    elif shape == "square":
        h = r * 0.82
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill, outline=outline, width=width)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.15, [r * 1.05] * 3, up), fill=fill, outline=outline, width=width)
    elif shape == "diamond":
        draw.polygon(_polygon(cx, cy, [r, r * 0.75, r, r * 0.75], up), fill=fill, outline=outline, width=width)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, r * 0.45] * 5, up), fill=fill, outline=outline, width=width)
    elif shape == "hexagon":
        draw.polygon(_polygon(cx, cy, [r] * 6, 0.0), fill=fill, outline=outline, width=width)
    elif shape == "cross":
        a = r * 0.34
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
        draw.polygon([(cx + x, cy + y) for x, y in pts], fill=fill, outline=outline, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _draw_text(draw: ImageDraw.ImageDraw, rng: np.random.Generator, text: str, side: int) -> None:
    """Overlay `text` (the OCR truth) as a banner along the top or bottom edge."""
    font = _font(max(8, side // 9))
    width = draw.textlength(text, font=font)
    x = max(1.0, (side - width) / 2)
    y = side * (0.02 if rng.random() < 0.5 else 0.86)
    ink = (255, 255, 255) if rng.random() < 0.5 else (10, 10, 10)
    shadow = tuple(255 - c for c in ink)
    draw.text((x + 1, y + 1), text, font=font, fill=shadow)
    draw.text((x, y), text, font=font, fill=ink)
