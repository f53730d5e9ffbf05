"""Synthetic face-identity data set in the original DDH/DCBH "32x32 vector folder" layout.

Why: the real sets (YouTube Faces, FaceScrub, ...) cannot be shipped, yet tests, demos
and smoke runs need data with the same files and a real identity structure. Each
identity is a cartoon face template (head shape, skin tone, hair, eyes, brows, nose,
mouth, glasses/beard, background and clothes); each image of it varies by pose
(shift, scale, roll, yaw, pitch), expression (smile, open mouth, raised brows,
blink), illumination (gain, offset, colour cast, lighting gradient), blur and pixel
noise. Identities come in small "families" that share parts of their template, so a
network must learn more than a colour lookup to tell siblings apart.

Command line (``common/synthetic/__main__.py``)::

    python -m common.synthetic --out DIR [--num_identities 100] [--train_per_identity 40]
        [--test_per_identity 5] [--seed 0] [--rows_per_file 1000] [--overwrite]

writes ``DIR/train/part_NNN.pkl``, ``DIR/test/part_NNN.pkl`` (``(x, y)`` tuples, x float32
(n, 3072) channel-first rows with integer values 0..255, y int64 labels 0..K-1) and
``DIR/meta.json``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from absl import logging

from common.data import to_rows, write_pickle_folder

IMAGE_SIZE = 32
GENERATOR_VERSION = 1  # bump whenever the same arguments would give different pixels
FAMILY_SIZE = 4  # identities k // FAMILY_SIZE share a prototype template
INHERIT_PROB = 0.5  # chance that one part group is copied from the family prototype
_PIX = 2.0 / IMAGE_SIZE  # one pixel in image units (the image spans [-1, 1])
_ZOOM = 1.12  # face size relative to the template units (faces fill the crop)
_WINDOWED = True  # paint small parts in windows only; tests turn it off to prove it exact

# Random streams, keyed by purpose so that no stream depends on how many draws another
# made: identity k's template does not depend on K, its images only on its image count.
_STREAM_PROTOTYPE, _STREAM_TEMPLATE, _STREAM_IMAGES, _STREAM_SHUFFLE = 0, 1, 2, 3

_SKIN_LIGHT = np.array([0.97, 0.82, 0.71])
_SKIN_DARK = np.array([0.36, 0.23, 0.15])
_HAIR_COLOURS = np.array([
    [0.07, 0.06, 0.06], [0.22, 0.13, 0.07], [0.42, 0.27, 0.14], [0.80, 0.66, 0.40],
    [0.58, 0.24, 0.10], [0.55, 0.55, 0.55], [0.86, 0.85, 0.81]])
_HAIR_WEIGHTS = np.array([0.30, 0.22, 0.16, 0.12, 0.06, 0.08, 0.06])
_IRIS_COLOURS = np.array([
    [0.20, 0.12, 0.06], [0.35, 0.22, 0.10], [0.25, 0.40, 0.62], [0.30, 0.45, 0.30],
    [0.45, 0.47, 0.50]])
_BACKGROUNDS = np.array([
    [0.82, 0.82, 0.80], [0.55, 0.60, 0.68], [0.35, 0.38, 0.42], [0.70, 0.62, 0.50],
    [0.40, 0.50, 0.40], [0.60, 0.45, 0.40], [0.20, 0.22, 0.28], [0.85, 0.78, 0.62],
    [0.50, 0.55, 0.60], [0.65, 0.70, 0.62]])
_CLOTHES = np.array([
    [0.15, 0.15, 0.18], [0.85, 0.85, 0.85], [0.20, 0.30, 0.55], [0.55, 0.15, 0.15],
    [0.25, 0.42, 0.30], [0.45, 0.45, 0.48], [0.60, 0.50, 0.35], [0.30, 0.20, 0.35]])
_FRAME_COLOURS = np.array([[0.05, 0.05, 0.05], [0.35, 0.20, 0.10], [0.70, 0.70, 0.72]])

# Template keys by part group; a family member copies whole groups from its prototype.
_GROUPS = {
    "skin": ("skin",),
    "head": ("head_a", "head_b", "taper", "ear", "face_y"),
    "hair": ("hair_colour", "hair_style", "hair_volume", "hairline", "parting", "hair_length"),
    "eyes": ("eye_x", "eye_y", "eye_rx", "eye_ry", "iris"),
    "brows": ("brow_gap", "brow_thick", "brow_tilt", "brow_len"),
    "nose": ("nose_len", "nose_w", "nose_shade"),
    "mouth": ("mouth_gap", "mouth_w", "lip", "lip_red", "smile"),
    "extras": ("glasses", "frame_colour", "beard"),
    "scene": ("background", "bg_gradient", "clothes"),
}
# Per-identity jitter (relative for geometry, absolute for colours) after mixing, so that
# siblings sharing a group are close but not equal.
_GEOMETRY_KEYS = ("head_a", "head_b", "ear", "hair_volume", "hairline", "eye_x", "eye_rx",
                  "eye_ry", "brow_gap", "brow_thick", "brow_len", "nose_len", "nose_w",
                  "mouth_gap", "mouth_w", "lip")
_COLOUR_KEYS = ("skin", "hair_colour", "iris", "background", "clothes")


def _pick(rng: np.random.Generator, palette: np.ndarray, spread: float,
          p: np.ndarray | None = None) -> np.ndarray:
    """A palette colour, a little lighter or darker, plus a little tint.

    Palettes keep colours plausible; the jitter is mostly brightness so that, e.g., grey
    hair does not turn lavender.
    """
    colour = palette[rng.choice(len(palette), p=p)] * (1.0 + rng.normal(0.0, 2.0 * spread))
    return np.clip(colour + rng.normal(0.0, spread / 2.0, 3), 0.0, 1.0)


def _sample_template(rng: np.random.Generator) -> dict[str, Any]:
    """Draw one full face template (units: the image spans [-1, 1], y points down)."""
    t: dict[str, Any] = {}
    tone = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.random()
    # mostly brightness, a little hue: independent channel noise turns skin green or red
    t["skin"] = tone * (1.0 + rng.normal(0.0, 0.05)) * (1.0 + rng.normal(0.0, 0.015, 3))
    t["head_a"] = rng.uniform(0.47, 0.60)       # half width
    t["head_b"] = rng.uniform(0.62, 0.76)       # half height
    t["taper"] = rng.uniform(0.0, 0.35)         # chin narrowing
    t["ear"] = rng.uniform(0.06, 0.10)
    t["face_y"] = rng.uniform(-0.10, 0.0)       # vertical placement of the head centre
    t["hair_colour"] = _pick(rng, _HAIR_COLOURS, 0.03, _HAIR_WEIGHTS)
    # 0 short, 1 long, 2 bald (sides only), 3 bangs, 4 voluminous
    t["hair_style"] = int(rng.choice(5, p=[0.36, 0.22, 0.12, 0.15, 0.15]))
    t["hair_volume"] = rng.uniform(1.03, 1.14)
    t["hairline"] = rng.uniform(0.22, 0.40)     # depth of the hairline below the head top
    t["parting"] = rng.uniform(-0.35, 0.35)     # slope of the hairline
    t["hair_length"] = rng.uniform(0.3, 1.0)
    t["eye_x"] = rng.uniform(0.16, 0.25)
    t["eye_y"] = rng.uniform(-0.12, 0.02)
    t["eye_rx"] = rng.uniform(0.07, 0.10)
    t["eye_ry"] = rng.uniform(0.45, 0.70)       # height / width
    t["iris"] = _pick(rng, _IRIS_COLOURS, 0.03)
    t["brow_gap"] = rng.uniform(0.09, 0.16)
    t["brow_thick"] = rng.uniform(0.022, 0.045)
    t["brow_tilt"] = rng.uniform(-0.35, 0.35)
    t["brow_len"] = rng.uniform(1.0, 1.5)       # times eye_rx
    t["nose_len"] = rng.uniform(0.16, 0.30)
    t["nose_w"] = rng.uniform(0.05, 0.09)
    t["nose_shade"] = rng.uniform(0.15, 0.35)
    t["mouth_gap"] = rng.uniform(0.09, 0.17)    # below the nose tip
    t["mouth_w"] = rng.uniform(0.12, 0.22)      # half width
    t["lip"] = rng.uniform(0.018, 0.035)
    t["lip_red"] = rng.uniform(0.25, 0.6)
    t["smile"] = rng.uniform(-0.2, 0.6)
    t["glasses"] = int(rng.choice(4, p=[0.8, 0.1, 0.06, 0.04]))  # none, thin, thick, sun
    t["frame_colour"] = _pick(rng, _FRAME_COLOURS, 0.02)
    t["beard"] = rng.uniform(0.5, 0.95) if rng.random() < 0.2 else 0.0
    t["background"] = _pick(rng, _BACKGROUNDS, 0.05)
    t["bg_gradient"] = rng.uniform(-0.2, 0.2)
    t["clothes"] = _pick(rng, _CLOTHES, 0.05)
    return t


def identity_template(seed: int, identity: int) -> dict[str, Any]:
    """The face template of one identity: family prototype groups mixed with its own.

    Why families: with fully independent templates most identities differ in several
    colours at once; siblings sharing e.g. skin, hair and background are the hard cases
    a hashing network must separate.
    """
    proto = _sample_template(np.random.default_rng([seed, _STREAM_PROTOTYPE,
                                                    identity // FAMILY_SIZE]))
    rng = np.random.default_rng([seed, _STREAM_TEMPLATE, identity])
    own = _sample_template(rng)
    inherit = rng.random(len(_GROUPS)) < INHERIT_PROB
    t: dict[str, Any] = {}
    for take_proto, keys in zip(inherit, _GROUPS.values()):
        for key in keys:
            t[key] = proto[key] if take_proto else own[key]
    for key in _GEOMETRY_KEYS:
        t[key] = t[key] * (1.0 + rng.normal(0.0, 0.04))
    for key in _COLOUR_KEYS:
        t[key] = np.clip(t[key] * (1.0 + rng.normal(0.0, 0.04)) * (1.0 + rng.normal(0.0, 0.01, 3)),
                         0.0, 1.0)
    return t


# ---------------------------------------------------------------- rendering
# Images are built channel-first, (3, n, 32, 32), in float32: numpy broadcasts a colour
# over a long last axis far faster than over a last axis of length 3, and float32 halves
# the memory traffic. Python float literals do not promote; template values are
# converted once by _as_float32 (colours to (3, 1, 1, 1)).


def _as_float32(t: dict[str, Any]) -> dict[str, Any]:
    """Template values as float32 scalars, colours as (3, 1, 1, 1); ints stay ints."""
    out = {}
    for k, v in t.items():
        if isinstance(v, np.ndarray):
            v = _c3(v)
        elif isinstance(v, float):
            v = np.float32(v)
        out[k] = v
    return out


def _c3(colour) -> np.ndarray:
    """An RGB triple as a float32 (3, 1, 1, 1) colour that broadcasts over (3, n, H, W)."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1, 1)


def _ellipse_sd(x, y, x0, y0, a, b):
    """Signed distance to an ellipse (negative inside), from below; exact for circles.

    Two lower bounds of the true distance, the larger taken: the first-order estimate
    (r - 1) / |grad r| (r convex), poor for flat ellipses (a blinking eye would smear a
    line across the face), and the distance to the bounding box, poor near the curve.
    """
    dx, dy = (x - x0) / a, (y - y0) / b
    r = np.sqrt(dx * dx + dy * dy)
    grad = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)  # |grad r| * r
    first_order = (r - 1.0) * r / np.maximum(grad, 1e-6)
    return np.maximum(first_order, np.maximum(a * (np.abs(dx) - 1.0), b * (np.abs(dy) - 1.0)))


def _segment_sd(x, y, x0, y0, x1, y1, radius):
    """Signed distance to a capsule (thick line segment)."""
    px, py, vx, vy = x - x0, y - y0, x1 - x0, y1 - y0
    h = np.clip((px * vx + py * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(px - h * vx, py - h * vy) - radius


def _box_sd(x, y, x0, y0, half_w, half_h):
    """Signed distance (Chebyshev-style, good enough for coverage) to a box."""
    return np.maximum(np.abs(x - x0) - half_w, np.abs(y - y0) - half_h)


def _paint(img, alpha, colour):
    """Alpha-composite ``colour`` over ``img`` (3, n, h, w) (a view is fine) in place."""
    img += alpha * (colour - img)


def _col(v):
    """(B,) -> (B, 1, 1) float32, for broadcasting over the pixel grid."""
    return np.asarray(v, dtype=np.float32)[:, None, None]


def _rgb(v):
    """Per-image colours (B, 3) -> (3, B, 1, 1) float32."""
    return np.asarray(v, dtype=np.float32).T[:, :, None, None]


def _render_identity(template: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``n`` images of one identity at once.

    Returns:
        (n, 32, 32, 3) float32 images (a transposed view) with integer values 0..255.
    """
    t = _as_float32(template)
    # ---- per-image variation (all drawn up front, in a fixed order)
    dx = rng.uniform(-2.0, 2.0, n) * _PIX
    dy = rng.uniform(-2.0, 2.0, n) * _PIX
    scale = _ZOOM * np.exp(rng.uniform(np.log(0.9), np.log(1.1), n))
    roll = np.clip(rng.normal(0.0, 0.07, n), -0.18, 0.18)
    yaw = rng.uniform(-0.5, 0.5, n)
    pitch = rng.uniform(-0.4, 0.4, n)
    smile = np.clip(t["smile"] + rng.normal(0.0, 0.35, n), -1.0, 1.5)
    mouth_open = np.where(rng.random(n) < 0.3, rng.uniform(0.2, 1.0, n), 0.0)
    brow_raise = np.where(rng.random(n) < 0.35, rng.uniform(0.0, 0.05, n), 0.0)
    eye_open = np.where(rng.random(n) < 0.15, rng.uniform(0.05, 0.45, n), rng.uniform(0.8, 1.1, n))
    gaze = rng.normal(0.0, 0.015, n)
    gain = np.exp(rng.uniform(np.log(0.7), np.log(1.3), n))
    offset = rng.uniform(-0.07, 0.07, n)
    light_amp = rng.uniform(0.0, 0.35, n)
    light_dir = rng.uniform(0.0, 2.0 * np.pi, n)
    cast = 1.0 + rng.normal(0.0, 0.04, (n, 3))
    bg_other = _BACKGROUNDS[rng.integers(0, len(_BACKGROUNDS), n)]
    bg_mix = rng.uniform(0.0, 0.4, n)[:, None]
    bg_shift = rng.normal(0.0, 0.04, (n, 3))
    clothes_shift = rng.normal(0.0, 0.04, (n, 3))
    blob_xy = rng.uniform(-1.0, 1.0, (2, n, 2))
    blob_r = rng.uniform(0.1, 0.35, (2, n))
    blob_colour = rng.uniform(0.1, 0.9, (2, n, 3))
    blob_alpha = np.where(rng.random((2, n)) < 0.5, rng.uniform(0.3, 0.8, (2, n)), 0.0)
    blur = rng.uniform(0.0, 0.7, n)
    noise_sigma = rng.uniform(1.5, 7.0, n) / 255.0
    # uniform sensor noise (unit variance): several times cheaper to draw than Gaussian
    noise = rng.random((3, n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    noise -= 0.5
    noise *= np.sqrt(12.0)

    # ---- image grid (pixel centres) and the per-image face frame
    grid = ((np.arange(IMAGE_SIZE) + 0.5) * _PIX - 1.0).astype(np.float32)
    u, v = grid[None, None, :], grid[None, :, None]  # x (columns), y (rows, downward)
    face_y = float(t["face_y"]) + dy
    cx, cy = _col(dx), _col(face_y)
    cos, sin, s = _col(np.cos(roll)), _col(np.sin(roll)), _col(scale)
    X = (cos * (u - cx) + sin * (v - cy)) / s
    Y = (-sin * (u - cx) + cos * (v - cy)) / s
    px = _PIX / s  # one pixel in face units, (B, 1, 1): broadcasts over any window

    def window(x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice, slice]:
        """Pixel window holding a face-frame box in every image of the batch.

        Small parts are painted only there: that, not the maths, is what makes
        rendering whole batches fast.
        """
        if not _WINDOWED:
            return (slice(None), slice(None), slice(None))
        xs = np.array([x0, x1, x0, x1])[:, None]
        ys = np.array([y0, y0, y1, y1])[:, None]
        uu = dx + scale * (np.cos(roll) * xs - np.sin(roll) * ys)
        vv = face_y + scale * (np.sin(roll) * xs + np.cos(roll) * ys)

        def span(lo: float, hi: float) -> slice:
            lo_i = int(np.floor((lo + 1.0) / _PIX - 0.5)) - 1
            hi_i = int(np.ceil((hi + 1.0) / _PIX - 0.5)) + 2
            return slice(min(max(lo_i, 0), IMAGE_SIZE), min(max(hi_i, 0), IMAGE_SIZE))

        return (slice(None), span(vv.min(), vv.max()), span(uu.min(), uu.max()))

    def cover(sd, soft=1.0):
        """Anti-aliased coverage of the region sd < 0 (linear ramp over ~one pixel)."""
        return np.clip(0.5 - sd / (px * soft), 0.0, 1.0)

    a, b = float(t["head_a"]), float(t["head_b"])
    skin, hair = t["skin"], t["hair_colour"]
    style = t["hair_style"]
    fx, fy = _col(yaw * 0.08), _col(pitch * 0.05)  # inner features follow the pose
    m = 0.1  # slack in window boxes for per-image feature offsets and anti-aliasing

    # ---- background: identity colour mixed with a per-image one, gradient, clutter blobs
    bg = template["background"] * (1.0 - bg_mix) + bg_other * bg_mix + bg_shift
    img = np.broadcast_to(_rgb(bg) * (1.0 + t["bg_gradient"] * v),
                          (3, n, IMAGE_SIZE, IMAGE_SIZE)).copy()

    def view(w: tuple[slice, slice, slice]) -> np.ndarray:
        """The (3, n, h, w) view of the images under a window."""
        return img[(slice(None),) + w]

    for k in range(2):
        sd = np.sqrt((u - _col(blob_xy[k, :, 0])) ** 2 + (v - _col(blob_xy[k, :, 1])) ** 2)
        sd -= _col(blob_r[k])
        _paint(img, np.clip(0.5 - sd / (3 * _PIX), 0.0, 1.0) * _col(blob_alpha[k]),
               _rgb(blob_colour[k]))

    # ---- shoulders, back hair, neck, ears
    w = window(-1.2, 1.2, b + 0.05, 2.0)
    _paint(view(w), cover(_ellipse_sd(X[w], Y[w], 0.0, b + 0.55, 0.95, 0.42)),
           _rgb(template["clothes"] + clothes_shift))
    vol = float(t["hair_volume"])
    hair_sd = _ellipse_sd(X, Y, 0.0, -0.1 * b, a * vol, b * vol * 0.98)
    if style == 1:  # long: hair falls behind the head down to the shoulders
        hw = a * vol * 1.1
        bottom = b * (0.4 + 0.7 * float(t["hair_length"]))
        back = np.minimum(_ellipse_sd(X, Y, 0.0, -0.1 * b, hw, b * vol * 1.05),
                          _box_sd(X, Y, 0.0, (bottom - 0.1 * b) / 2, hw, (bottom + 0.1 * b) / 2))
        _paint(img, cover(back), hair * 0.85)
    elif style == 4:  # voluminous
        _paint(img, cover(_ellipse_sd(X, Y, 0.0, -0.15 * b, a * vol * 1.25, b * vol * 1.1)),
               hair * 0.9)
    elif style != 2:  # short or bangs: a rim of hair around the top of the head
        _paint(img, cover(hair_sd) * cover(Y - t["eye_y"] - 0.05), hair * 0.9)
    w = window(-a * 0.5, a * 0.5, b * 0.5, b + 0.3)
    _paint(view(w), cover(_box_sd(X[w], Y[w], 0.0, b * 0.9, a * 0.42, 0.3)), skin * 0.8)
    ey0 = float(t["eye_y"])
    ear_y = t["eye_y"] + 0.06 + fy
    for side in (-1.0, 1.0):
        ex = side * a * 0.97
        w = window(ex - 0.1 - m, ex + 0.1 + m, ey0 - 0.1 - m, ey0 + 0.2 + m)
        _paint(view(w), cover(_ellipse_sd(X[w], Y[w], ex - fx * 0.7, ear_y, t["ear"] * 0.8,
                                         t["ear"] * 1.4)), skin * 0.9)

    # ---- head with a little 3-D shading (darker towards the rim and away from the nose)
    Xh = X / (1.0 - t["taper"] * np.clip(Y / b, 0.0, 1.0) ** 2)
    head = cover(_ellipse_sd(Xh, Y, 0.0, 0.0, a, b))
    r2 = np.clip(((Xh - 0.5 * fx) / a) ** 2 + (Y / b) ** 2, 0.0, 1.0)
    _paint(img, head, skin * (1.0 - 0.25 * r2 * r2))

    # ---- hair on the head: the part of the hair shape above a curved, tilted hairline
    w = window(-1.5, 1.5, -1.5, ey0 + 0.45)
    X_, Y_ = X[w], Y[w]
    if style != 2:
        depth = float(t["hairline"]) + (0.2 if style == 3 else 0.0)
        hairline = -b + depth * b + t["parting"] * X_ + 0.9 * X_ * X_
        _paint(view(w), cover(hair_sd[w]) * cover(Y_ - hairline), hair)
    else:  # bald: hair only on the sides of the head, above the ears
        hairline = -0.55 * b + 0.9 * X_ * X_
        cap = cover(hair_sd[w]) * cover(Y_ - hairline) * cover(0.72 * a - np.abs(X_))
        _paint(view(w), cap * cover(t["eye_y"] + 0.02 - Y_), hair)

    eye_y = t["eye_y"] + fy
    nose_tip = eye_y + t["nose_len"] * (1.0 - 0.2 * _col(pitch))
    mouth_y = nose_tip + t["mouth_gap"]
    my0 = ey0 + float(t["nose_len"]) + float(t["mouth_gap"])

    # ---- beard: lower face below a line from the cheeks to above the upper lip
    if t["beard"] > 0:
        w = window(-a - m, a + m, ey0 + 0.1, b + m)
        blend = np.clip(1.0 - np.abs(X[w] - fx) / (0.8 * a), 0.0, 1.0)
        top = (eye_y + 0.32) * (1.0 - blend) + (mouth_y - 0.06) * blend
        _paint(view(w), head[w] * cover(top - Y[w], soft=3.0) * t["beard"], hair * 0.9)

    # ---- nose: a soft shadow down the ridge and darker nostrils
    nx, nw = fx * 1.5, t["nose_w"]
    w = window(-0.15 - m, 0.15 + m, ey0 - m, ey0 + float(t["nose_len"]) + 0.1 + m)
    X_, Y_ = X[w], Y[w]
    _paint(view(w), cover(_segment_sd(X_, Y_, nx * 0.5, eye_y + 0.06, nx, nose_tip, nw * 0.45),
                         soft=2.5) * t["nose_shade"], skin * 0.6)
    _paint(view(w), cover(_ellipse_sd(X_, Y_, nx, nose_tip, nw, nw * 0.45), soft=1.5)
           * (t["nose_shade"] + 0.2), skin * 0.5)

    # ---- eyes: socket shadow, sclera (closes when blinking), iris, pupil, upper lid
    erx = t["eye_rx"]
    ery = np.maximum(erx * t["eye_ry"] * _col(eye_open), 1e-3)
    sclera_colour, pupil_colour = _c3([0.93, 0.93, 0.90]), _c3([0.04, 0.04, 0.04])
    glasses = t["glasses"]
    reach = float(erx) * (1.8 if glasses else 1.5)
    for side in (-1.0, 1.0):
        ex0 = side * float(t["eye_x"])
        w = window(ex0 - reach - m, ex0 + reach + m, ey0 - reach - m, ey0 + reach + m)
        X_, Y_, im = X[w], Y[w], view(w)
        ex = ex0 + fx
        _paint(im, cover(_ellipse_sd(X_, Y_, ex, eye_y - 0.01, erx * 1.5, erx * 1.1), 2.0) * 0.45,
               skin * 0.7)
        sclera = cover(_ellipse_sd(X_, Y_, ex, eye_y, erx, ery))
        _paint(im, sclera, sclera_colour)
        iris_d = np.hypot(X_ - (ex + _col(gaze) + fx * 0.3), Y_ - eye_y)
        _paint(im, sclera * cover(iris_d - erx * 0.6), t["iris"])
        _paint(im, sclera * cover(iris_d - erx * 0.28), pupil_colour)
        lid = _ellipse_sd(X_, Y_, ex, eye_y, erx * 1.05, ery + 0.01)
        _paint(im, cover(np.abs(lid) - 0.012) * cover(Y_ - eye_y) * 0.7, skin * 0.35)
        if glasses:
            thick = 0.014 if glasses == 1 else 0.028
            rim = _ellipse_sd(X_, Y_, ex, eye_y, erx * 1.65, erx * 1.3)
            if glasses == 3:
                _paint(im, cover(rim) * 0.88, _c3([0.06, 0.06, 0.08]))
            _paint(im, cover(np.abs(rim) - thick), t["frame_colour"])
    if glasses:  # bridge
        inner_x = float(t["eye_x"] - erx * 1.65)
        w = window(-inner_x - m, inner_x + m, ey0 - m, ey0 + m)
        _paint(view(w), cover(_segment_sd(X[w], Y[w], fx - inner_x, eye_y - 0.02, fx + inner_x,
                                         eye_y - 0.02, thick)), t["frame_colour"])

    # ---- eyebrows: tilted thick strokes, raised by expression
    brow_colour = hair * 0.75 + 0.05
    half = erx * t["brow_len"]
    tilt = t["brow_tilt"] * half  # positive: inner ends lower (stern look)
    by = eye_y - t["brow_gap"] - _col(brow_raise)
    for side in (-1.0, 1.0):
        bx0 = side * float(t["eye_x"])
        reach = float(half + t["brow_thick"]) + m
        w = window(bx0 - reach, bx0 + reach,
                   ey0 - float(t["brow_gap"]) - 0.1 - m, ey0 - float(t["brow_gap"]) + 0.05 + m)
        bx = bx0 + fx
        _paint(view(w), cover(_segment_sd(X[w], Y[w], bx - side * half, by + tilt,
                                         bx + side * half, by - tilt * 0.3, t["brow_thick"])),
               brow_colour)

    # ---- mouth: curved lips (smile/frown), dark opening when open
    mw = t["mouth_w"] * (1.0 + 0.1 * np.minimum(_col(smile), 1.0))
    w = window(-float(t["mouth_w"]) * 1.2 - m, float(t["mouth_w"]) * 1.2 + m,
               my0 - 0.12 - m, my0 + 0.15 + m)
    X_, Y_ = X[w], Y[w]
    mxr = (X_ - fx * 1.2) / mw
    profile = np.sqrt(np.clip(1.0 - mxr * mxr, 0.0, 1.0))
    centre = mouth_y + 0.05 * _col(smile) * (1.0 - mxr * mxr)
    opening = 0.055 * _col(mouth_open) * profile
    lips = np.maximum(np.abs(Y_ - centre) - (t["lip"] + opening), np.abs(mxr) * mw - mw)
    lip_colour = skin * (1.0 - t["lip_red"]) + _c3([0.70, 0.22, 0.25]) * t["lip_red"]
    _paint(view(w), cover(lips), lip_colour * 0.9)
    inner = np.maximum(np.abs(Y_ - centre) - opening * 0.8, np.abs(mxr) * mw - mw * 0.85)
    _paint(view(w), cover(inner), _c3([0.22, 0.06, 0.07]))

    # ---- camera: illumination, blur, noise, 8-bit levels
    light = _col(gain) * (1.0 + _col(light_amp) * (_col(np.cos(light_dir)) * u
                                                   + _col(np.sin(light_dir)) * v))
    img *= light * _rgb(cast)
    img += _col(offset)
    pad = np.pad(img, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    rows = pad[:, :, :-2] + 2.0 * pad[:, :, 1:-1] + pad[:, :, 2:]
    blurred = (rows[..., :-2] + 2.0 * rows[..., 1:-1] + rows[..., 2:]) * (1.0 / 16.0)
    img += _col(blur) * (blurred - img)
    img += noise * _col(noise_sigma)
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    np.round(img, out=img)
    return img.transpose(1, 2, 3, 0)


def _check_counts(num_identities: int, train_per_identity: int, test_per_identity: int,
                  seed: int) -> None:
    for name, value, low in (("num_identities", num_identities, 1),
                             ("train_per_identity", train_per_identity, 1),
                             ("test_per_identity", test_per_identity, 1),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def generate_identity_dataset(num_identities: int = 100, train_per_identity: int = 40,
                              test_per_identity: int = 5, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate the synthetic identity data set in memory.

    Each identity's images are rendered as one batch and split into its first
    ``train_per_identity`` (train) and the rest (test); the rows of each split are then
    shuffled with a seeded permutation, like the real converted sets.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: x float32 (n, 3072) channel-first rows of
        integer values 0..255, y int64 labels 0..num_identities-1.
    """
    _check_counts(num_identities, train_per_identity, test_per_identity, seed)
    per = train_per_identity + test_per_identity
    train_x = np.empty((num_identities * train_per_identity, 3 * IMAGE_SIZE ** 2), np.float32)
    test_x = np.empty((num_identities * test_per_identity, 3 * IMAGE_SIZE ** 2), np.float32)
    start = last_log = time.perf_counter()
    for k in range(num_identities):
        images = _render_identity(identity_template(seed, k), per,
                                  np.random.default_rng([seed, _STREAM_IMAGES, k]))
        rows = to_rows(images).astype(np.float32)
        train_x[k * train_per_identity:(k + 1) * train_per_identity] = rows[:train_per_identity]
        test_x[k * test_per_identity:(k + 1) * test_per_identity] = rows[train_per_identity:]
        now = time.perf_counter()
        if now - last_log > 2.0 or k + 1 == num_identities:
            logging.info("rendered %d/%d identities (%.1fs)", k + 1, num_identities, now - start)
            last_log = now
    train_y = np.repeat(np.arange(num_identities, dtype=np.int64), train_per_identity)
    test_y = np.repeat(np.arange(num_identities, dtype=np.int64), test_per_identity)
    shuffle = np.random.default_rng([seed, _STREAM_SHUFFLE])
    order = shuffle.permutation(len(train_y))
    train_x, train_y = train_x[order], train_y[order]
    order = shuffle.permutation(len(test_y))
    test_x, test_y = test_x[order], test_y[order]
    return train_x, train_y, test_x, test_y


def _existing_pkl(out_dir: str) -> list[str]:
    found = []
    for split in ("train", "test"):
        folder = os.path.join(out_dir, split)
        if os.path.isdir(folder):
            found += [os.path.join(split, n) for n in sorted(os.listdir(folder))
                      if n.endswith(".pkl")]
    return found


def write_synthetic_dataset(out_dir: str | os.PathLike, num_identities: int = 100,
                            train_per_identity: int = 40, test_per_identity: int = 5,
                            seed: int = 0, rows_per_file: int = 1000,
                            overwrite: bool = False) -> dict[str, Any]:
    """Generate the data set and write ``out_dir/{train,test}/part_NNN.pkl`` and ``meta.json``.

    The same arguments give byte-identical files. Existing ``.pkl`` files in either split
    folder are refused before anything is written (a half-replaced data set would mix
    two generations) unless ``overwrite``.

    Returns:
        The metadata written to ``meta.json``.

    Raises:
        FileExistsError: ``train/`` or ``test/`` already holds ``.pkl`` files.
        ValueError: a count is not a positive integer or the seed is negative.
    """
    out_dir = os.fspath(out_dir)
    _check_counts(num_identities, train_per_identity, test_per_identity, seed)
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file!r}")
    existing = _existing_pkl(out_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a data set ({len(existing)} .pkl files, e.g. "
            f"{existing[0]}); pass --overwrite (overwrite=True) to replace it")
    start = time.perf_counter()
    train_x, train_y, test_x, test_y = generate_identity_dataset(
        num_identities, train_per_identity, test_per_identity, seed)
    generated = time.perf_counter()
    files = {}
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        paths = write_pickle_folder(os.path.join(out_dir, split), x, y,
                                    rows_per_file=rows_per_file, overwrite=overwrite)
        files[split] = [os.path.basename(p) for p in paths]
    meta = {
        "synthetic": True,
        "note": ("Synthetic cartoon faces from common.synthetic, not real people; the layout "
                 "is the original DDH/DCBH 32x32 vector folders."),
        "generator": "common.synthetic",
        "generator_version": GENERATOR_VERSION,
        "family_size": FAMILY_SIZE,
        "seed": int(seed),
        "num_identities": int(num_identities),
        "train_per_identity": int(train_per_identity),
        "test_per_identity": int(test_per_identity),
        "rows_per_file": int(rows_per_file),
        "train_images": int(len(train_y)),
        "test_images": int(len(test_y)),
        "image_shape": [IMAGE_SIZE, IMAGE_SIZE, 3],
        "row_layout": "float32 (n, 3072), channel-first (C, H, W) flattened, values 0..255",
        "labels": f"int64 0..{num_identities - 1}",
        "files": files,
    }
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    logging.info("generated in %.2fs, wrote in %.2fs",
                 generated - start, time.perf_counter() - generated)
    return meta
