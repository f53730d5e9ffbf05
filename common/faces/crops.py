"""Where the 32x32 face is cut from a photo: the geometry, and the resampling.

Why these numbers: the models are trained on LFW deep-funneled faces made by taking the
centred square of half the shorter side of a 250x250 photo and shrinking it to 32x32 with
Lanczos (``lfw_deepfunneled_32``). Running MTCNN on those 32x32 training faces (upscaled
4x) puts the detected box's centre at the image centre (0.50, 0.50 of the side) and its
geometric-mean side sqrt(w*h) at 0.835 of the image side (200 faces, std 0.04); the LFW
photos themselves give 0.857 within the same centred half. So a detected face is cut as
the square of side ``FACE_SCALE`` x sqrt(w*h) = 1.2 x sqrt(w*h) centred on the box, which
lays the face out in the 32x32 frame as the training faces are laid out.

* Centre crop (no detector): the square of side ``round(CENTER_FRACTION x shorter side)``
  = half the shorter side, at ``left = round((W - side) / 2)``, ``top = round((H - side) /
  2)`` (Python's round, half to even), shrunk to 32x32 with Lanczos: exactly how
  ``lfw_deepfunneled_32`` was made, right for photos already framed on one face (LFW
  photos, passport-style shots), wrong for anything else.
* Detected face: the square above, optionally turned about its centre by the angle of
  the line through the two eyes so that they end level (the deep-funneled training faces
  are upright). It is sampled at its own resolution (bicubic; side ``max(32, round(side))``
  pixels; squares of 512 pixels and more are first block-averaged by an integer factor to
  256..511), with the photo's edge pixels repeated where the square reaches past the photo,
  then shrunk to 32x32 with Lanczos (antialiased, as the training faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

FACE_SIZE = 32            # the models' input side
CENTER_FRACTION = 0.5     # centre crop: side = this x the shorter side (as lfw_deepfunneled_32)
FACE_SCALE = 1.2          # detected face: crop side = this x sqrt(box width x box height)
_BICUBIC_REACH = 3        # pixels the bicubic kernel reads beyond a sample, plus rounding
_SAMPLE_SIDE = 256        # bigger squares are block-averaged to 256..511 px before sampling


@dataclass(frozen=True)
class Square:
    """A square in a photo: centre (x, y) in pixels (pixel i spans [i, i+1)), side in
    pixels, and the angle in degrees (clockwise in the image) its sides are turned by."""

    center_x: float
    center_y: float
    side: float
    angle: float = 0.0

    def box(self) -> tuple[int, int, int, int]:
        """The unturned square as integer (x, y, width, height); may reach past the photo."""
        side = max(1, int(round(self.side)))
        return (int(round(self.center_x - self.side / 2)),
                int(round(self.center_y - self.side / 2)), side, side)


def center_box(width: int, height: int,
               fraction: float = CENTER_FRACTION) -> tuple[int, int, int, int]:
    """The centre crop's (x, y, side, side): see the module docstring."""
    side = max(1, int(round(fraction * min(width, height))))
    left = min(max(int(round((width - side) / 2)), 0), width - side)
    top = min(max(int(round((height - side) / 2)), 0), height - side)
    return left, top, side, side


def face_square(box: tuple[float, float, float, float],
                left_eye: tuple[float, float] | None = None,
                right_eye: tuple[float, float] | None = None,
                scale: float = FACE_SCALE) -> Square:
    """The square to cut around a detected ``box`` (x, y, w, h); turned to level the eyes
    when both eye positions (the image-left one first) are given."""
    x, y, w, h = (float(v) for v in box)
    angle = 0.0
    if left_eye is not None and right_eye is not None:
        dx = float(right_eye[0]) - float(left_eye[0])
        dy = float(right_eye[1]) - float(left_eye[1])
        if dx or dy:
            angle = math.degrees(math.atan2(dy, dx))
    return Square(x + w / 2, y + h / 2, scale * math.sqrt(max(w, 0.0) * max(h, 0.0)), angle)


def shrink_to_face(image: np.ndarray) -> np.ndarray:
    """A square uint8 RGB crop as the 32x32 face (Lanczos; unchanged if already 32x32)."""
    pil = Image.fromarray(image)
    if pil.size != (FACE_SIZE, FACE_SIZE):
        pil = pil.resize((FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
    return np.array(pil, dtype=np.uint8)


def cut_center(image: np.ndarray,
               fraction: float = CENTER_FRACTION) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The centre crop of ``image`` (uint8 (H, W, 3)) as a 32x32 face, and its box."""
    height, width = image.shape[:2]
    x, y, side, _ = box = center_box(width, height, fraction)
    return shrink_to_face(np.ascontiguousarray(image[y:y + side, x:x + side])), box


def _corners(square: Square) -> np.ndarray:
    """The four corners of ``square`` in photo coordinates, (4, 2)."""
    half = square.side / 2
    turn = math.radians(square.angle)
    cos, sin = math.cos(turn), math.sin(turn)
    offsets = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    rotated = offsets @ np.array([[cos, sin], [-sin, cos]])
    return rotated + [square.center_x, square.center_y]


def _region_with_edges(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``image[y0:y1, x0:x1]``, where it reaches past the photo filled by repeating the edge."""
    height, width = image.shape[:2]
    inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    return np.pad(inner, pad, mode="edge") if any(p != (0, 0) for p in pad[:2]) else inner


def cut_square(image: np.ndarray, square: Square) -> np.ndarray:
    """The (turned) ``square`` of ``image`` (uint8 (H, W, 3)) as a 32x32 face."""
    height, width = image.shape[:2]
    corners = _corners(square)
    # Only the region around the square is resampled (a face in a 50 MP photo is small);
    # where the square reaches past the photo (a face at its edge), the edge is repeated.
    x0 = int(math.floor(corners[:, 0].min())) - _BICUBIC_REACH
    y0 = int(math.floor(corners[:, 1].min())) - _BICUBIC_REACH
    x1 = int(math.ceil(corners[:, 0].max())) + _BICUBIC_REACH
    y1 = int(math.ceil(corners[:, 1].max())) + _BICUBIC_REACH
    region = Image.fromarray(np.ascontiguousarray(_region_with_edges(image, x0, y0, x1, y1)))
    # A big face (a close-up in a 50 MP photo) is first reduced by block averaging to a
    # side of _SAMPLE_SIDE..2x that: the same result after Lanczos, without sampling
    # hundreds of megabytes.
    factor = max(1, int(square.side // _SAMPLE_SIDE))
    if factor > 1:
        region = region.reduce(factor)
    side = square.side / factor
    pixels = max(FACE_SIZE, int(round(side)))
    step = side / pixels
    turn = math.radians(square.angle)
    cos, sin = step * math.cos(turn), step * math.sin(turn)
    half = pixels / 2
    cx, cy = (square.center_x - x0) / factor, (square.center_y - y0) / factor
    # Pillow maps output point (u, v) to input (a u + b v + c, d u + e v + f).
    coefficients = (cos, -sin, cx - cos * half + sin * half,
                    sin, cos, cy - sin * half - cos * half)
    sampled = region.transform(
        (pixels, pixels), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.BICUBIC)
    return shrink_to_face(np.array(sampled, dtype=np.uint8))
