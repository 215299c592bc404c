# Copyright (c) mmpsearch contributors. All rights reserved.
"""Rendering of the synthetic scenes: identities' looks, persons, street
backgrounds, scenes with their boxes, and who appears in which image.

Also the two file writers that both release writers use
(:func:`write_image`, :func:`write_mat`).
"""
import os
import os.path as osp
from dataclasses import dataclass
from itertools import product
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..mat_utils import save_mat

Color = Tuple[int, int, int]

# Saturated clothing colours (BGR), far apart from each other.
PALETTE: Dict[str, Color] = {
    'red': (40, 40, 215),
    'green': (50, 175, 40),
    'blue': (205, 90, 25),
    'yellow': (35, 215, 235),
    'cyan': (215, 200, 35),
    'magenta': (195, 45, 200),
    'orange': (20, 130, 245),
    'purple': (135, 25, 95),
    'white': (238, 238, 238),
    'black': (28, 28, 28),
}
PATTERNS = ('plain', 'hstripes', 'vstripes', 'split', 'band')
SKINS: Sequence[Color] = ((150, 180, 225), (120, 160, 205), (90, 125, 170),
                          (60, 85, 120))
HAIRS: Sequence[Color] = ((20, 20, 25), (30, 55, 95), (60, 120, 175),
                          (150, 150, 155))
SHOES: Sequence[Color] = ((25, 25, 25), (60, 60, 70), (210, 210, 210), (30, 50,
                                                                        90))


@dataclass
class PersonLook:
    """What one person wears (BGR colours)."""
    upper: Color
    lower: Color
    pattern: str
    accent: Color
    skin: Color
    hair: Color
    shoes: Color
    hat: Optional[Color]
    bag: Optional[Color]
    build: float


def split_identities(num_ids: int) -> Tuple[int, int]:
    """How many of ``num_ids`` identities train and how many test: the
    releases split them about in half, the test half rounded down."""
    n_test_ids = num_ids // 2
    if n_test_ids < 1:
        raise ValueError(f'num_ids={num_ids} leaves no test identity; use '
                         'num_ids >= 2')
    return num_ids - n_test_ids, n_test_ids


def identity_looks(rng: np.random.Generator, num: int) -> List[PersonLook]:
    """``num`` identities with pairwise different (upper, lower, pattern)
    combinations (while there are enough of them: 500)."""
    names = list(PALETTE)
    combos = list(
        product(range(len(names)), range(len(names)), range(len(PATTERNS))))
    order = rng.permutation(len(combos))
    looks = []
    for k in range(num):
        u, lo, p = combos[order[k % len(combos)]]
        accent = names[(u + 1 + int(rng.integers(len(names) - 1))) %
                       len(names)]
        looks.append(
            PersonLook(
                upper=PALETTE[names[u]],
                lower=PALETTE[names[lo]],
                pattern=PATTERNS[p],
                accent=PALETTE[accent],
                skin=SKINS[int(rng.integers(len(SKINS)))],
                hair=HAIRS[int(rng.integers(len(HAIRS)))],
                shoes=SHOES[int(rng.integers(len(SHOES)))],
                hat=(PALETTE[names[int(rng.integers(len(names)))]]
                     if rng.random() < 0.3 else None),
                bag=(PALETTE[names[int(rng.integers(len(names)))]]
                     if rng.random() < 0.3 else None),
                build=float(rng.uniform(0.85, 1.15))))
    return looks


def _muted(rng: np.random.Generator, vmin: int = 90, vmax: int = 210) -> Color:
    """A dull colour (low saturation): background clutter, passers-by."""
    hsv = np.uint8([[[
        rng.integers(0, 180),
        rng.integers(0, 55),
        rng.integers(vmin, vmax)
    ]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def passerby_look(rng: np.random.Generator) -> PersonLook:
    """An unlabeled passer-by: dull clothes, no accessories."""
    return PersonLook(
        upper=_muted(rng, 60, 170),
        lower=_muted(rng, 40, 140),
        pattern='plain',
        accent=(0, 0, 0),
        skin=SKINS[int(rng.integers(len(SKINS)))],
        hair=HAIRS[int(rng.integers(len(HAIRS)))],
        shoes=SHOES[int(rng.integers(len(SHOES)))],
        hat=None,
        bag=None,
        build=float(rng.uniform(0.85, 1.15)))


def render_person(look: PersonLook, height: int,
                  rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one standing / walking person ``height`` px tall.

    Returns a BGR canvas and its uint8 mask (255 on the person).
    """
    u = float(height)
    ch, cw = int(u) + 6, int(0.9 * u) + 6
    img = np.zeros((ch, cw, 3), np.uint8)
    mask = np.zeros((ch, cw), np.uint8)
    cx, top, b = cw / 2.0, 3.0, look.build

    def pt(x: float, y: float) -> Tuple[int, int]:
        return int(round(x)), int(round(y))

    def th(v: float) -> int:
        return max(2, int(round(v)))

    def draw(fn, color, *args, **kwargs):
        fn(img, *args, color=color, **kwargs)
        fn(mask, *args, color=255, **kwargs)

    stride = rng.uniform(-0.08, 0.08) * u
    swing = rng.uniform(-0.06, 0.06) * u
    hip = 0.06 * u * b
    y_s, y_w, y_f = top + 0.19 * u, top + 0.53 * u, top + 0.94 * u
    sw, ww = 0.15 * u * b, 0.12 * u * b
    # legs and shoes
    for side, d in ((-1, stride), (1, -stride)):
        foot = (cx + side * hip + d, y_f)
        draw(
            cv2.line,
            look.lower,
            pt(cx + side * hip, y_w),
            pt(*foot),
            thickness=th(0.095 * u))
        draw(
            cv2.ellipse,
            look.shoes,
            pt(foot[0] + side * 0.015 * u, y_f + 0.025 * u),
            (th(0.055 * u), th(0.028 * u)),
            0,
            0,
            360,
            thickness=-1)
    # arms (sleeves in the upper colour) and hands
    for side, d in ((-1, swing), (1, -swing)):
        hand = (cx + side * (sw + 0.03 * u) + d, top + 0.5 * u)
        draw(
            cv2.line,
            look.upper,
            pt(cx + side * (sw - 0.02 * u), y_s + 0.03 * u),
            pt(*hand),
            thickness=th(0.06 * u))
        draw(cv2.circle, look.skin, pt(*hand), th(0.03 * u), thickness=-1)
    # torso with the identity's pattern
    torso = np.array([
        pt(cx - sw, y_s),
        pt(cx + sw, y_s),
        pt(cx + ww, y_w + 0.03 * u),
        pt(cx - ww, y_w + 0.03 * u)
    ], np.int32)
    tmask = np.zeros_like(mask)
    cv2.fillConvexPoly(tmask, torso, 255)
    img[tmask > 0] = look.upper
    mask |= tmask
    if look.pattern != 'plain':
        yy, xx = np.mgrid[0:ch, 0:cw]
        period = max(4.0, 0.07 * u)
        if look.pattern == 'hstripes':
            pat = ((yy - y_s) % period) < period / 2
        elif look.pattern == 'vstripes':
            pat = ((xx - cx) % period) < period / 2
        elif look.pattern == 'split':
            pat = xx < cx
        else:  # band across the chest
            pat = (yy > y_s + 0.1 * u) & (yy < y_s + 0.19 * u)
        img[(tmask > 0) & pat] = look.accent
    # neck, head, hair, hat
    draw(
        cv2.line,
        look.skin,
        pt(cx, top + 0.13 * u),
        pt(cx, y_s),
        thickness=th(0.05 * u))
    hc, r = pt(cx, top + 0.085 * u), th(0.07 * u)
    draw(cv2.circle, look.skin, hc, r, thickness=-1)
    draw(cv2.ellipse, look.hair, hc, (r, r), 0, 180, 360, thickness=-1)
    if look.hat is not None:
        draw(
            cv2.rectangle,
            look.hat,
            pt(cx - 0.9 * r, hc[1] - 1.35 * r),
            pt(cx + 0.9 * r, hc[1] - 0.45 * r),
            thickness=-1)
        draw(
            cv2.line,
            look.hat,
            pt(cx - 1.4 * r, hc[1] - 0.5 * r),
            pt(cx + 1.4 * r, hc[1] - 0.5 * r),
            thickness=th(0.02 * u))
    if look.bag is not None:
        draw(
            cv2.line,
            look.bag,
            pt(cx - 0.6 * sw, y_s),
            pt(cx + ww + 0.06 * u, top + 0.42 * u),
            thickness=th(0.015 * u))
        draw(
            cv2.rectangle,
            look.bag,
            pt(cx + ww + 0.01 * u, top + 0.41 * u),
            pt(cx + ww + 0.13 * u, top + 0.57 * u),
            thickness=-1)
    if rng.random() < 0.5:  # facing the other way
        img, mask = img[:, ::-1].copy(), mask[:, ::-1].copy()
    # illumination of this appearance
    gain = rng.uniform(0.85, 1.12)
    img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return img, mask


def render_background(rng: np.random.Generator,
                      width: int,
                      height: int,
                      info: Optional[dict] = None) -> np.ndarray:
    """A cluttered street-like background of dull colours.

    When ``info`` is a dict, the base colours (BGR) are put in it as
    ``wall`` and ``ground`` (the scene description of the captions, see
    :mod:`.captions`); the random draws and the image are the same either
    way.
    """
    W, H = width, height
    img = np.zeros((H, W, 3), np.float32)
    horizon = int(rng.uniform(0.3, 0.5) * H)
    wall, ground = np.float32(_muted(rng, 120,
                                     220)), np.float32(_muted(rng, 70, 160))
    if info is not None:
        info['wall'] = tuple(int(c) for c in wall)
        info['ground'] = tuple(int(c) for c in ground)
    ramp = np.linspace(1.0, 0.85, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = wall * ramp
    ramp = np.linspace(0.9, 1.1, H - horizon, dtype=np.float32)
    img[horizon:] = ground * ramp[:, None, None]
    img = img.clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # buildings with windows
        x1 = int(rng.integers(-20, W))
        x2 = x1 + int(rng.integers(30, 110))
        y1 = int(rng.integers(0, max(1, horizon - 10)))
        cv2.rectangle(img, (x1, y1), (x2, horizon), _muted(rng, 80, 200), -1)
        win = _muted(rng, 40, 230)
        step = int(rng.integers(10, 18))
        for wy in range(y1 + 4, horizon - 8, step):
            for wx in range(x1 + 4, x2 - 6, step):
                cv2.rectangle(img, (wx, wy), (wx + step // 2, wy + step // 2),
                              win, -1)
    line = _muted(rng, 50, 150)
    for k in range(int(rng.integers(3, 8))):  # paving lines
        y = int(horizon + (H - horizon) * (k + rng.random()) / 8)
        cv2.line(img, (0, y), (W, y + int(rng.integers(-8, 9))), line, 1)
    for _ in range(int(rng.integers(4, 12))):  # clutter
        kind = rng.integers(3)
        c = _muted(rng, 50, 200)
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        if kind == 0:  # bush / tree crown
            cv2.circle(img, (x, y), int(rng.integers(6, 24)), c, -1)
        elif kind == 1:  # sign, car, box
            cv2.rectangle(
                img, (x, y),
                (x + int(rng.integers(10, 60)), y + int(rng.integers(6, 30))),
                c, -1)
        else:  # pole
            cv2.line(img, (x, y), (x, min(H, y + int(rng.integers(20, 90)))),
                     c, int(rng.integers(2, 4)))
    return img


@dataclass
class _Placed:
    key: Optional[int]  # person id, None for a passer-by
    box: Tuple[int, int, int, int]  # x, y, w, h (full body, may cross x=0)
    foot: float
    canvas: np.ndarray
    mask: np.ndarray
    origin: Tuple[int, int]


def _overlap(a: Tuple[int, int, int, int], b: Tuple[int, int, int,
                                                    int]) -> float:
    """Largest fraction of either box covered by the other."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return max(inter / (a[2] * a[3]), inter / (b[2] * b[3]))


def render_scene(rng: np.random.Generator,
                 background: np.ndarray,
                 people: Sequence[Tuple[PersonLook, Optional[int]]],
                 cut_left: float = 0.0) -> Tuple[np.ndarray, List[_Placed]]:
    """Place ``people`` (look, id) in the scene, far ones first.

    Persons are scaled by the depth of their feet, kept from covering each
    other by more than ~30 %, and a foreground object sometimes hides the
    lower part of one of them. With probability ``cut_left`` a person is cut
    by the left image border (its box then starts at a negative x, as some
    PRW boxes do). Returns the image and the placed persons in the order of
    ``people``.
    """
    img = background.copy()
    H, W = img.shape[:2]
    hmin, hmax = 0.23 * H, 0.48 * H
    placed: List[_Placed] = []
    for look, key in people:
        foot = rng.uniform(0.5, 0.97) * H
        h = (hmin + (foot - 0.5 * H) / (0.47 * H) *
             (hmax - hmin)) * rng.uniform(0.92, 1.08)
        canvas, mask = render_person(look, int(h), rng)
        ys, xs = np.nonzero(mask)
        lx1, ly1, lx2, ly2 = xs.min(), ys.min(), xs.max(), ys.max()
        bw, bh = int(lx2 - lx1 + 1), int(ly2 - ly1 + 1)
        by = int(round(min(foot, H - 1) - bh))
        by = max(0, min(by, H - bh))
        cut = rng.random() < cut_left
        limit, box = 0.3, None
        for attempt in range(60):
            if cut:
                bx = -int(rng.integers(1, max(2, bw // 4)))
            else:
                bx = int(rng.integers(0, max(1, W - bw)))
            cand = (bx, by, bw, bh)
            if all(_overlap(cand, p.box) <= limit for p in placed):
                box = cand
                break
            if attempt % 20 == 19:
                limit += 0.15  # crowded: accept a little more overlap
        if box is None:
            box = cand
        placed.append(
            _Placed(key, box, foot, canvas, mask,
                    (box[0] - int(lx1), box[1] - int(ly1))))
    for p in sorted(placed, key=lambda p: p.foot):
        _paste(img, p.canvas, p.mask, p.origin)
    if placed and rng.random() < 0.25:  # a foreground object
        x, y, w, h = placed[int(rng.integers(len(placed)))].box
        oh = int(h * rng.uniform(0.12, 0.28))
        ox = x + int(w * rng.uniform(-0.3, 0.5))
        cv2.rectangle(img, (ox, y + h - oh),
                      (ox + int(w * rng.uniform(0.5, 0.9)), y + h + 2),
                      _muted(rng, 60, 180), -1)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= 4.0  # sensor noise
    noise += img
    img = np.clip(noise, 0, 255, out=noise).astype(np.uint8)
    return img, placed


def _paste(img: np.ndarray, canvas: np.ndarray, mask: np.ndarray,
           origin: Tuple[int, int]) -> None:
    H, W = img.shape[:2]
    ox, oy = origin
    ch, cw = mask.shape
    x1, y1 = max(ox, 0), max(oy, 0)
    x2, y2 = min(ox + cw, W), min(oy + ch, H)
    if x2 <= x1 or y2 <= y1:
        return
    m = mask[y1 - oy:y2 - oy, x1 - ox:x2 - ox] > 0
    img[y1:y2, x1:x2][m] = canvas[y1 - oy:y2 - oy, x1 - ox:x2 - ox][m]


def assign_ids(rng: np.random.Generator,
               n_images: int,
               ids: Sequence[int],
               cap: int,
               counts: Optional[Dict[int, int]] = None) -> List[List[int]]:
    """1-3 labeled persons per image, spreading appearances evenly over
    ``ids`` and giving no id more than ``cap`` appearances."""
    counts = {i: 0 for i in ids} if counts is None else counts
    out = []
    for _ in range(n_images):
        m = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
        free = [i for i in ids if counts[i] < cap]
        tie = rng.random(len(free))
        chosen = [
            free[k] for k in sorted(
                range(len(free)), key=lambda k: (counts[free[k]], tie[k]))
        ][:m]
        for i in chosen:
            counts[i] += 1
        out.append(chosen)
    return out


def scene_people(rng: np.random.Generator, looks: Dict[int, PersonLook],
                 ids: Sequence[int]) -> List[Tuple[PersonLook, Optional[int]]]:
    """The persons of one scene: the identities ``ids`` and 0-2 unlabeled
    passers-by (at least one person in all), in a random order (the order
    of the annotation)."""
    people = [(looks[i], i) for i in ids]
    n_pass = int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))
    for _ in range(max(n_pass, 1 - len(people))):  # never an empty scene
        people.append((passerby_look(rng), None))
    order = rng.permutation(len(people))  # annotation order: mixed
    return [people[k] for k in order]


# --------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------
#: The header text of every .mat file written (instead of scipy's, which
#: holds the time of writing), so equal content gives equal bytes.
MAT_HEADER = 'MATLAB 5.0 MAT-file, written by mmpsearch synthetic scenes'


def write_mat(path: str, mdict: Dict[str, np.ndarray]) -> None:
    """``mdict`` as a MAT v5 file at ``path`` with the fixed header."""
    save_mat(path, mdict, MAT_HEADER)


def write_image(path: str, img: np.ndarray) -> None:
    """``img`` (BGR) as a JPEG of quality 92 at ``path``."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f'could not write {path}')
