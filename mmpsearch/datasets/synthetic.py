# Copyright (c) mmpsearch contributors. All rights reserved.
"""Synthetic person-search scenes written in the released CUHK-SYSU and PRW
formats.

:func:`make_synthetic` renders small street-like scenes (cluttered
backgrounds, several person-shaped figures, unlabeled passers-by, partial
occlusion) and writes them with exactly the layout, .mat nesting and text
format of the real releases, so :class:`CUHKSYSUDataset`,
:class:`PRWDataset` and the protocol loaders read them unchanged. It is the
built-in data of ``make demo`` and of the tests; no download is needed.

Identities are made to be learnable by a small ReID model: each one has its
own combination of upper / lower clothing colour and upper-body pattern
(plain, horizontal or vertical stripes, two-tone, chest band), plus
accessories (hat, bag), skin, hair and build; passers-by wear dull,
unsaturated clothes. Pose (stride, arm swing, facing), scale (by depth in
the scene) and illumination vary per appearance.

Output is a pure function of the arguments: the same seed gives
byte-identical files (the .mat header's time stamp is replaced by a fixed
text).
"""
import io
import os
import os.path as osp
from dataclasses import dataclass
from itertools import product
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .cuhk_sysu import CUHK_GALLERY_SIZES

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
SHOES: Sequence[Color] = ((25, 25, 25), (60, 60, 70), (210, 210, 210),
                          (30, 50, 90))
# The query subsets of CUHK-SYSU (annotation/test/subset): a query is
# "occluded" when the box of a person nearer the camera covers at least this
# share of its box, "low resolution" when its box is lower than this share
# of the image height.
OCCLUSION_MIN_SHARE = 0.15
LOW_RES_MAX_HEIGHT = 0.28


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


def identity_looks(rng: np.random.Generator, num: int) -> List[PersonLook]:
    """``num`` identities with pairwise different (upper, lower, pattern)
    combinations (while there are enough of them: 500)."""
    names = list(PALETTE)
    combos = list(product(range(len(names)), range(len(names)),
                          range(len(PATTERNS))))
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


def _muted(rng: np.random.Generator, vmin: int = 90,
           vmax: int = 210) -> Color:
    """A dull colour (low saturation): background clutter, passers-by."""
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 55),
                      rng.integers(vmin, vmax)]]])
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
        draw(cv2.line, look.lower, pt(cx + side * hip, y_w), pt(*foot),
             thickness=th(0.095 * u))
        draw(cv2.ellipse, look.shoes,
             pt(foot[0] + side * 0.015 * u, y_f + 0.025 * u),
             (th(0.055 * u), th(0.028 * u)), 0, 0, 360, thickness=-1)
    # arms (sleeves in the upper colour) and hands
    for side, d in ((-1, swing), (1, -swing)):
        hand = (cx + side * (sw + 0.03 * u) + d, top + 0.5 * u)
        draw(cv2.line, look.upper, pt(cx + side * (sw - 0.02 * u),
                                      y_s + 0.03 * u), pt(*hand),
             thickness=th(0.06 * u))
        draw(cv2.circle, look.skin, pt(*hand), th(0.03 * u), thickness=-1)
    # torso with the identity's pattern
    torso = np.array([pt(cx - sw, y_s), pt(cx + sw, y_s),
                      pt(cx + ww, y_w + 0.03 * u),
                      pt(cx - ww, y_w + 0.03 * u)], np.int32)
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
    draw(cv2.line, look.skin, pt(cx, top + 0.13 * u), pt(cx, y_s),
         thickness=th(0.05 * u))
    hc, r = pt(cx, top + 0.085 * u), th(0.07 * u)
    draw(cv2.circle, look.skin, hc, r, thickness=-1)
    draw(cv2.ellipse, look.hair, hc, (r, r), 0, 180, 360, thickness=-1)
    if look.hat is not None:
        draw(cv2.rectangle, look.hat, pt(cx - 0.9 * r, hc[1] - 1.35 * r),
             pt(cx + 0.9 * r, hc[1] - 0.45 * r), thickness=-1)
        draw(cv2.line, look.hat, pt(cx - 1.4 * r, hc[1] - 0.5 * r),
             pt(cx + 1.4 * r, hc[1] - 0.5 * r), thickness=th(0.02 * u))
    if look.bag is not None:
        draw(cv2.line, look.bag, pt(cx - 0.6 * sw, y_s),
             pt(cx + ww + 0.06 * u, top + 0.42 * u), thickness=th(0.015 * u))
        draw(cv2.rectangle, look.bag, pt(cx + ww + 0.01 * u, top + 0.41 * u),
             pt(cx + ww + 0.13 * u, top + 0.57 * u), thickness=-1)
    if rng.random() < 0.5:  # facing the other way
        img, mask = img[:, ::-1].copy(), mask[:, ::-1].copy()
    # illumination of this appearance
    gain = rng.uniform(0.85, 1.12)
    img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return img, mask


def render_background(rng: np.random.Generator, width: int,
                      height: int) -> np.ndarray:
    """A cluttered street-like background of dull colours."""
    W, H = width, height
    img = np.zeros((H, W, 3), np.float32)
    horizon = int(rng.uniform(0.3, 0.5) * H)
    wall, ground = np.float32(_muted(rng, 120, 220)), np.float32(
        _muted(rng, 70, 160))
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
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 60)),
                                        y + int(rng.integers(6, 30))), c, -1)
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


def render_scene(rng: np.random.Generator, background: np.ndarray,
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


def _assign_ids(rng: np.random.Generator, n_images: int,
                ids: Sequence[int], cap: int,
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


def _people(rng: np.random.Generator, looks: Dict[int, PersonLook],
            ids: Sequence[int]) -> List[Tuple[PersonLook, Optional[int]]]:
    people = [(looks[i], i) for i in ids]
    n_pass = int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))
    for _ in range(max(n_pass, 1 - len(people))):  # never an empty scene
        people.append((passerby_look(rng), None))
    order = rng.permutation(len(people))  # annotation order: mixed
    return [people[k] for k in order]


# --------------------------------------------------------------------------
# .mat writing in the released nesting.
# --------------------------------------------------------------------------
def _struct(fields: Sequence[str], rows: Sequence[Sequence]) -> np.ndarray:
    """A 1xN MATLAB struct array (numpy record array of object fields)."""
    arr = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f, v in zip(fields, row):
            arr[f][0, i] = v
    return arr


def _cell(items: Sequence, column: bool = True) -> np.ndarray:
    """An Nx1 (or 1xN) MATLAB cell array."""
    arr = np.empty((len(items), 1) if column else (1, len(items)), object)
    for i, v in enumerate(items):
        arr.flat[i] = v
    return arr


def _num(v) -> np.ndarray:
    return np.atleast_2d(np.asarray(v, dtype=np.float64))


_EMPTY = np.zeros((0, 0))


def _savemat(path: str, mdict: Dict[str, np.ndarray]) -> None:
    """``scipy.io.savemat`` (MAT v5) with a fixed header text, so equal
    content gives equal bytes."""
    from scipy.io import savemat
    buf = io.BytesIO()
    savemat(buf, mdict, format='5', oned_as='row')
    data = bytearray(buf.getvalue())
    data[:116] = b'MATLAB 5.0 MAT-file, written by mmpsearch ' \
        b'synthetic scenes'.ljust(116)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(bytes(data))


def _imwrite(path: str, img: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f'could not write {path}')


# --------------------------------------------------------------------------
# CUHK-SYSU.
# --------------------------------------------------------------------------
def _make_cuhk(out_dir: str, num_images: int, num_ids: int, seed: int,
               image_size: Tuple[int, int]) -> dict:
    W, H = image_size
    n_test = num_images // 2
    if n_test < 101:
        raise ValueError(
            f'num_images={num_images} gives a gallery of {n_test} images; '
            'TestG100 needs at least 101 (the query image plus 100), so use '
            'num_images >= 202')
    n_test_ids = num_ids // 2
    n_train_ids = num_ids - n_test_ids
    if n_test_ids < 1:
        raise ValueError(f'num_ids={num_ids} leaves no test identity; use '
                         'num_ids >= 2')
    rng = np.random.default_rng([seed, 0])
    looks_list = identity_looks(rng, num_ids)
    idnums = [int(v) for v in rng.permutation(num_ids) + 1]  # p1..pK
    looks = {pid: looks_list[k] for k, pid in enumerate(idnums)}
    train_ids, test_ids = idnums[:n_train_ids], idnums[n_train_ids:]
    names = [f's{i + 1}.jpg' for i in range(num_images)]
    order = rng.permutation(num_images)
    pool = [names[i] for i in order[:n_test]]
    pool_set = set(pool)
    train_names = [n for n in names if n not in pool_set]
    content = dict(
        zip(train_names, _assign_ids(rng, len(train_names), train_ids, 20)))
    content.update(zip(pool, _assign_ids(rng, len(pool), test_ids, 10)))
    seen = {i: 0 for i in test_ids}
    for n in pool:
        for i in content[n]:
            seen[i] += 1
    if min(seen.values()) < 2:
        raise ValueError(
            f'num_ids={num_ids} is too many for num_images={num_images}: '
            'some test identity appears in fewer than 2 gallery images')

    # Render every image; records: name -> [(xywh, pid or None, ishard)].
    records: Dict[str, List[Tuple[List[int], Optional[int], int]]] = {}
    for k, name in enumerate(names):
        irng = np.random.default_rng([seed, 1, k])
        img, placed = render_scene(irng, render_background(irng, W, H),
                                   _people(irng, looks, content[name]))
        _imwrite(osp.join(out_dir, 'Image', 'SSM', name), img)
        recs = [(list(p.box), p.key, int(irng.random() < 0.1))
                for p in placed]
        if irng.random() < 0.05:  # the release holds a few w or h = 0 boxes
            x, y = int(irng.integers(0, W - 10)), int(irng.integers(0, H - 10))
            recs.append(([x, y, 0, int(irng.integers(5, 40))], None, 0))
        records[name] = recs

    appear: Dict[int, List[Tuple[str, List[int], int]]] = {}
    for name in train_names + pool:  # Train / TestG orders follow these
        for xywh, pid, hard in records[name]:
            if pid is not None:
                appear.setdefault(pid, []).append((name, xywh, hard))

    anno = osp.join(out_dir, 'annotation')
    proto = osp.join(anno, 'test', 'train_test')
    _savemat(
        osp.join(anno, 'Images.mat'), {
            'Img':
            _struct(('imname', 'nAppear', 'box'), [
                (n, _num(len(records[n])),
                 _struct(('idlocate', 'ishard'),
                         [(_num(b), _num(hd)) for b, _, hd in records[n]]))
                for n in names
            ])
        })
    _savemat(osp.join(anno, 'pool.mat'), {'pool': _cell(pool)})

    def person(pid: int) -> np.ndarray:
        sc = appear[pid]
        return _struct(('idname', 'nAppear', 'scene'), [
            (f'p{pid}', _num(len(sc)),
             _struct(('imname', 'idlocate', 'ishard'),
                     [(n, _num(b), _num(hd)) for n, b, hd in sc]))
        ])

    all_ids = sorted(appear)
    _savemat(
        osp.join(anno, 'Person.mat'), {
            'Person':
            np.concatenate([person(p) for p in all_ids], axis=1)
        })
    train_present = [p for p in train_ids if p in appear]
    _savemat(
        osp.join(proto, 'Train.mat'),
        {'Train': _cell([person(p) for p in train_present])})

    # Gallery lists: the images holding the query, then distractors.
    query_order = [test_ids[k] for k in rng.permutation(len(test_ids))]
    sizes = [g for g in CUHK_GALLERY_SIZES if g <= n_test - 1]
    lists = {}
    for pid in query_order:
        (qn, qb, qh), *pos = appear[pid]
        holders = {qn} | {n for n, _, _ in pos}
        others = [n for n in pool if n not in holders]
        others = [others[k] for k in rng.permutation(len(others))]
        lists[pid] = (qn, qb, qh, pos, others)
    for g in sizes:
        rows = []
        for pid in query_order:
            qn, qb, qh, pos, others = lists[pid]
            query = _struct(('imname', 'idlocate', 'ishard', 'idname'),
                            [(qn, _num(qb), _num(qh), f'p{pid}')])
            gal = [(n, _num(b), _num(hd)) for n, b, hd in pos]
            gal += [(n, _EMPTY, _EMPTY) for n in others[:g - len(pos)]]
            rows.append((query, _struct(('imname', 'idlocate', 'ishard'),
                                        gal)))
        _savemat(
            osp.join(proto, f'TestG{g}.mat'),
            {f'TestG{g}': _struct(('Query', 'Gallery'), rows)})
    subsets = _write_cuhk_subsets(anno, query_order, lists, records, H)
    return dict(
        format='cuhk',
        out_dir=out_dir,
        num_images=num_images,
        num_train_images=len(train_names),
        num_gallery_images=len(pool),
        num_train_ids=len(train_present),
        num_queries=len(query_order),
        num_boxes=sum(len(r) for r in records.values()),
        gallery_sizes=sizes,
        subsets=subsets)


def occlusion_share(box: Sequence[float],
                    others: Sequence[Sequence[float]]) -> float:
    """The largest share of ``box`` [x, y, w, h] covered by one of the
    boxes ``others`` whose bottom edge is lower in the image (a person
    nearer the camera, drawn over it: scenes are painted far to near)."""
    x, y, w, h = (float(v) for v in box)
    best = 0.0
    for ox, oy, ow, oh in others:
        if ow <= 0 or oh <= 0 or oy + oh <= y + h:
            continue
        ix = min(x + w, ox + ow) - max(x, ox)
        iy = min(y + h, oy + oh) - max(y, oy)
        if ix > 0 and iy > 0:
            best = max(best, ix * iy / (w * h))
    return best


def _write_cuhk_subsets(anno: str, query_order: Sequence[int], lists: dict,
                        records: dict, height: int) -> Dict[str, int]:
    """``annotation/test/subset/{Occlusion,Resolution}.mat`` in the
    released nesting (``Occlusion1``: Query, Gallery, occlusion;
    ``Test_Size``: Query, Gallery), their entries in TestG order, each with
    the query's TestG100 gallery list (the released subsets list 100 images
    per query). Occlusion: queries whose :func:`occlusion_share` reaches
    ``OCCLUSION_MIN_SHARE`` (the share is the ``occlusion`` field);
    resolution: queries whose box is lower than ``LOW_RES_MAX_HEIGHT`` times
    the image height. A subset without any query is not written. Draws no
    random numbers, so the other files do not change."""
    occ, low = [], []
    for pid in query_order:
        qn, qb, qh, pos, others = lists[pid]
        query = _struct(('imname', 'idlocate', 'ishard', 'idname'),
                        [(qn, _num(qb), _num(qh), f'p{pid}')])
        gal = [(n, _num(b), _num(hd)) for n, b, hd in pos]
        gal += [(n, _EMPTY, _EMPTY) for n in others[:100 - len(pos)]]
        gallery = _struct(('imname', 'idlocate', 'ishard'), gal)
        share = occlusion_share(
            qb, [b for b, p, _ in records[qn] if p != pid])
        if share >= OCCLUSION_MIN_SHARE:
            occ.append((query, gallery, _num(share)))
        if qb[3] < LOW_RES_MAX_HEIGHT * height:
            low.append((query, gallery))
    sub = osp.join(anno, 'test', 'subset')
    if occ:
        _savemat(
            osp.join(sub, 'Occlusion.mat'), {
                'Occlusion1': _struct(('Query', 'Gallery', 'occlusion'), occ)
            })
    if low:
        _savemat(
            osp.join(sub, 'Resolution.mat'),
            {'Test_Size': _struct(('Query', 'Gallery'), low)})
    return dict(occlusion=len(occ), resolution=len(low))


# --------------------------------------------------------------------------
# PRW.
# --------------------------------------------------------------------------
def _make_prw(out_dir: str, num_images: int, num_ids: int, seed: int,
              image_size: Tuple[int, int]) -> dict:
    W, H = image_size
    cams = 6
    if num_images < 4 * cams:
        raise ValueError(f'num_images={num_images} is too small for 6 '
                         'cameras; use num_images >= 24')
    n_test_ids = num_ids // 2
    n_train_ids = num_ids - n_test_ids
    if n_test_ids < 1:
        raise ValueError(f'num_ids={num_ids} leaves no test identity; use '
                         'num_ids >= 2')
    rng = np.random.default_rng([seed, 2])
    looks_list = identity_looks(rng, num_ids)
    # original ids 1..K, train and test ids interleaved (as in the release)
    idnums = [int(v) for v in rng.permutation(num_ids) + 1]
    looks = {pid: looks_list[k] for k, pid in enumerate(idnums)}
    train_ids, test_ids = sorted(idnums[:n_train_ids]), sorted(
        idnums[n_train_ids:])
    visits = {
        pid: sorted(int(c) + 1 for c in rng.choice(
            cams, size=int(rng.integers(2, 5)), replace=False))
        for pid in idnums
    }
    # frames: camera, sequence, frame number; then a train / test split
    frames: List[Tuple[str, int]] = []
    for c in range(1, cams + 1):
        n_c = num_images // cams + (c <= num_images % cams)
        num = int(rng.integers(100, 400))
        for j in range(n_c):
            num += int(rng.integers(20, 150))
            frames.append((f'c{c}s{1 + j // 40}_{num:06d}', c))
    is_test = {}
    for c in range(1, cams + 1):
        fc = [f for f, cc in frames if cc == c]
        flags = np.zeros(len(fc), bool)
        flags[rng.permutation(len(fc))[:len(fc) // 2]] = True
        is_test.update(zip(fc, flags.tolist()))

    content: Dict[str, List[int]] = {}
    for split_ids, test in ((train_ids, False), (test_ids, True)):
        for c in range(1, cams + 1):
            here = [p for p in split_ids if c in visits[p]]
            fc = [f for f, cc in frames if cc == c and is_test[f] == test]
            content.update(zip(fc, _assign_ids(rng, len(fc), here, 8)))

    bg_cam = {
        c: render_background(np.random.default_rng([seed, 3, c]), W, H)
        for c in range(1, cams + 1)
    }
    records: Dict[str, List[Tuple[List[int], Optional[int]]]] = {}
    for k, (frame, c) in enumerate(frames):
        irng = np.random.default_rng([seed, 4, k])
        bg = bg_cam[c].astype(np.int16) + int(irng.integers(-12, 13))
        bg = np.clip(bg, 0, 255).astype(np.uint8)
        img, placed = render_scene(
            irng, bg, _people(irng, looks, content[frame]), cut_left=0.06)
        _imwrite(osp.join(out_dir, 'frames', f'{frame}.jpg'), img)
        records[frame] = [(list(p.box), p.key) for p in placed]

    names = sorted(f for f, _ in frames)
    for k, frame in enumerate(names):
        arr = np.array([[-2 if pid is None else pid] + box
                        for box, pid in records[frame]], np.float64)
        stale = arr.copy()
        stale[:, 1:3] += 7  # an older, shifted annotation round
        if k % 10 == 3:
            mdict = {'anno_file': arr}
        elif k % 10 == 6:
            mdict = {'anno_previous': arr}
        elif k % 10 == 8:
            mdict = {'anno_file': arr, 'anno_previous': stale}
        elif k % 20 == 11:
            mdict = {'box_new': arr, 'anno_file': stale}
        else:
            mdict = {'box_new': arr}
        _savemat(osp.join(out_dir, 'annotations', f'{frame}.jpg.mat'), mdict)
    train_frames = [f for f in names if not is_test[f]]
    test_frames = [f for f in names if is_test[f]]
    _savemat(
        osp.join(out_dir, 'frame_train.mat'),
        {'img_index_train': _cell(train_frames)})
    _savemat(
        osp.join(out_dir, 'frame_test.mat'),
        {'img_index_test': _cell(test_frames)})
    present_train = sorted({
        pid
        for f in train_frames for _, pid in records[f] if pid is not None
    })
    _savemat(osp.join(out_dir, 'ID_train.mat'), {'ID_train': _num(
        present_train)})
    _savemat(osp.join(out_dir, 'ID_test.mat'), {'ID_test2': _num(test_ids)})

    # queries: per test id, its first appearance in up to two cameras
    lines = []
    for pid in test_ids:
        where = [(f, box) for f in test_frames for box, p in records[f]
                 if p == pid]
        cams_seen = sorted({int(f[1]) for f, _ in where})
        if len(where) < 2:
            raise ValueError(
                f'num_ids={num_ids} is too many for num_images={num_images}: '
                f'test identity {pid} appears in {len(where)} test frame(s); '
                'a query needs at least one more')
        for c in cams_seen[:2]:
            f, (x, y, w, h) = next((f, b) for f, b in where
                                   if int(f[1]) == c)
            lines.append(f'{pid} {x:.4f} {y:.4f} {w:.4f} {h:.4f} {f}\r\n')
    with open(osp.join(out_dir, 'query_info.txt'), 'w', newline='') as fh:
        fh.write(''.join(lines))
    return dict(
        format='prw',
        out_dir=out_dir,
        num_images=len(frames),
        num_train_images=len(train_frames),
        num_gallery_images=len(test_frames),
        num_train_ids=len(present_train),
        num_queries=len(lines),
        num_boxes=sum(len(r) for r in records.values()))


def make_synthetic(fmt: str,
                   out_dir: str,
                   num_images: int = 400,
                   num_ids: int = 50,
                   seed: int = 0,
                   image_size: Tuple[int, int] = (320, 240)) -> dict:
    """Render a synthetic person-search dataset in a released format.

    Args:
        fmt (str): ``'cuhk'`` (CUHK-SYSU layout: ``Image/SSM``,
            ``annotation/{Images,pool,Person}.mat``,
            ``annotation/test/train_test/{Train,TestG50,TestG100,...}.mat``,
            ``annotation/test/subset/{Occlusion,Resolution}.mat`` with the
            queries that really are occluded / small, see
            ``_write_cuhk_subsets``)
            or ``'prw'`` (``frames/``, ``annotations/*.jpg.mat``,
            ``frame_{train,test}.mat``, ``query_info.txt`` with CRLF lines,
            ``ID_train.mat``, ``ID_test.mat``).
        out_dir (str): Folder to write into (created).
        num_images (int): Scene images. CUHK: half of them form the gallery
            (``pool.mat``), which must hold at least 101 images for
            ``TestG100``; larger ``TestG{N}`` files are written only when the
            gallery has more than N images.
        num_ids (int): Identities, half for training and half for testing.
        seed (int): Everything written depends only on the arguments.
        image_size (tuple): (width, height) of the scenes.

    Returns:
        dict: Counts of what was written.
    """
    if fmt not in ('cuhk', 'prw'):
        raise ValueError(f"fmt={fmt!r}; expected 'cuhk' or 'prw'")
    if num_images < 1 or num_ids < 2:
        raise ValueError(f'num_images={num_images}, num_ids={num_ids}: '
                         'expected num_images >= 1 and num_ids >= 2')
    W, H = image_size
    if W < 64 or H < 64:
        raise ValueError(f'image_size={image_size} is too small; expected '
                         'width and height >= 64')
    maker = _make_cuhk if fmt == 'cuhk' else _make_prw
    return maker(out_dir, int(num_images), int(num_ids), int(seed),
                 (int(W), int(H)))


__all__ = [
    'make_synthetic', 'render_person', 'render_scene', 'render_background',
    'identity_looks', 'passerby_look', 'PersonLook'
]
