"""Pictures of a prediction, drawn with PIL on the user's image: class colours, masks, prompts, text.

Each helper takes an RGB `PIL.Image` and returns a new one, so a task's picture is a chain of them
(`predict.py` composes them per task). Coordinates are image pixels, x right and y down from the
top-left corner. Everything is drawn over the image: the picture keeps the image's size.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
FOREGROUND: RGB = (40, 220, 60)  # a prompt point labelled 1 (SAM's convention), and boxes
BACKGROUND: RGB = (235, 40, 40)  # a prompt point labelled 0
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)


def picture(pixels: np.ndarray) -> Image.Image:
    """An HWC uint8 RGB array as a PIL image."""
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


def _blend(image: Image.Image, where: np.ndarray, colours: np.ndarray, alpha: float) -> Image.Image:
    """`image` with `colours` (one RGB, or one per selected pixel) mixed in at `alpha` where `where` is True."""
    pixels = np.asarray(image.convert("RGB"))
    if where.shape != pixels.shape[:2]:
        raise ValueError(f"mask of shape {where.shape} for an image of {pixels.shape[1]}x{pixels.shape[0]}")
    mixed = pixels.copy()
    chosen = pixels[where].astype(np.float32)
    mixed[where] = np.clip(np.rint(chosen * (1.0 - alpha) + np.asarray(colours, dtype=np.float32) * alpha), 0, 255).astype(np.uint8)
    return picture(mixed)


def overlay_mask(image: Image.Image, mask: np.ndarray, color: RGB, alpha: float = 0.5) -> Image.Image:
    """`color` blended in at `alpha` where the boolean (H, W) `mask` is True (one object, one class,
    or black over what the model did not see)."""
    return _blend(image, np.asarray(mask, dtype=bool), colours=np.asarray(color), alpha=alpha)


def overlay_classes(image: Image.Image, class_map: np.ndarray, palette: Sequence[RGB], alpha: float = 0.5) -> Image.Image:
    """Every pixel blended with its class's colour: `class_map` (H, W) holds class indices into
    `palette`; a negative index leaves the pixel as it is."""
    class_map = np.asarray(class_map)
    where = class_map >= 0
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return _blend(image, where, colours=colours[class_map[where]], alpha=alpha)


def _stroke(image: Image.Image) -> int:
    """A line width / marker radius that reads on this image, small or large."""
    return max(2, round(min(image.size) / 120))


def draw_points(image: Image.Image, points: Sequence[tuple[float, float]], labels: Sequence[int]) -> Image.Image:
    """Prompt points as filled dots ringed in white: green for label 1 (foreground), red for 0 (background)."""
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    radius = 2 * _stroke(image) + 1
    for (x, y), label in zip(points, labels):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=FOREGROUND if label else BACKGROUND, outline=WHITE, width=max(1, radius // 3))
    return drawn


def draw_box(image: Image.Image, box: tuple[float, float, float, float], color: RGB = FOREGROUND) -> Image.Image:
    """A box prompt (x0, y0, x1, y1) as an outline."""
    drawn = image.copy()
    ImageDraw.Draw(drawn).rectangle(tuple(box), outline=color, width=_stroke(image))
    return drawn


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def draw_text_band(image: Image.Image, lines: Sequence[str], swatches: Optional[Sequence[RGB]] = None) -> Image.Image:
    """`lines` in white on a dark band across the bottom of the image, each after a colour square
    when `swatches` gives one per line. Text too long for a small image is cut at its edge."""
    if not lines:
        return image
    width, height = image.size
    size = min(40, max(9, round(min(width, height) / 22)))
    font = _font(size)
    line_height = size + max(2, size // 3)
    padding = max(2, size // 3)
    top = max(0, height - len(lines) * line_height - 2 * padding)
    band = np.zeros((height, width), dtype=bool)
    band[top:] = True
    drawn = overlay_mask(image, mask=band, color=BLACK, alpha=0.6)
    draw = ImageDraw.Draw(drawn)
    for index, line in enumerate(lines):
        x, y = padding, top + padding + index * line_height
        if swatches is not None:
            draw.rectangle((x, y + 1, x + size - 2, y + size - 1), fill=tuple(swatches[index]), outline=WHITE)
            x += size + padding
        draw.text((x, y), line, fill=WHITE, font=font)
    return drawn


def png_bytes(image: Image.Image) -> bytes:
    """The picture as PNG file contents (written atomically by the caller)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
