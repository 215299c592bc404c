# Copyright (c) mmpsearch contributors. All rights reserved.
"""Synthetic videos of the synthetic scenes: persons (the identities of
:func:`.render.identity_looks`) walking across a street background,
written as MP4 with OpenCV, and a still query image of one of them.

Each identity's look comes from ``look_seed`` alone, so two videos made
with the same ``look_seed`` show the same persons; what a video shows is a
pure function of its arguments.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from .render import (_paste, identity_looks, passerby_look, render_background,
                     render_person)


def _person(look, height: int, seed: int):
    canvas, mask = render_person(look, height, np.random.default_rng(seed))
    ys, xs = np.nonzero(mask)
    return canvas, mask, (int(xs.min()), int(ys.min()), int(xs.max()),
                          int(ys.max()))


def render_video_frames(num_frames: int = 24,
                        size: Tuple[int, int] = (320, 240),
                        identities: Sequence[int] = (0, 1),
                        num_ids: int = 8,
                        look_seed: int = 0,
                        seed: int = 0,
                        passersby: int = 1):
    """Frames (BGR) and, per frame, ``[[person id (-1: passer-by), x1, y1,
    x2, y2], ...]`` of the visible persons.

    Each person walks straight across the scene at its own depth and speed,
    entering and leaving at the borders (so appearances start and end
    inside the video), bobbing one pixel with its step.
    """
    W, H = size
    looks = identity_looks(np.random.default_rng(look_seed), num_ids)
    rng = np.random.default_rng(seed)
    background = render_background(rng, W, H)
    walkers = []
    people = [(looks[i], i) for i in identities] + \
        [(passerby_look(rng), -1) for _ in range(passersby)]
    for k, (look, pid) in enumerate(people):
        foot = rng.uniform(0.6, 0.97) * H
        height = int((0.23 + (foot / H - 0.5) / 0.47 * 0.25) * H)
        canvas, mask, (lx1, ly1, lx2, ly2) = _person(look, height,
                                                     seed * 1000 + k)
        bw = lx2 - lx1 + 1
        # cross the frame once, starting off-screen at a random phase
        span = W + bw
        direction = 1 if rng.random() < 0.5 else -1
        speed = span / (num_frames * rng.uniform(0.5, 0.9))
        x0 = rng.uniform(-0.3, 0.2) * span
        walkers.append((pid, foot, canvas, mask, (lx1, ly1, lx2, ly2),
                        direction, speed, x0, bw))
    walkers.sort(key=lambda w: w[1])  # far ones first
    frames, boxes = [], []
    for f in range(num_frames):
        img = background.copy()
        visible = []
        for pid, foot, canvas, mask, (lx1, ly1, lx2, ly2), d, v, x0, bw \
                in walkers:
            along = x0 + v * f
            left = along - bw if d > 0 else W - along
            bx = int(round(left))
            by = int(round(foot - (ly2 - ly1 + 1))) + (f // 2) % 2
            _paste(img, canvas, mask, (bx - lx1, by - ly1))
            x1, x2 = max(bx, 0), min(bx + bw, W)
            y1, y2 = max(by, 0), min(by + ly2 - ly1 + 1, H)
            if x2 - x1 >= 0.6 * bw and y2 > y1:  # mostly inside
                visible.append([int(pid), x1, y1, x2, y2])
        noise = np.random.default_rng(seed * 100003 + f).standard_normal(
            img.shape).astype(np.float32) * 3.0
        frames.append(np.clip(img + noise, 0, 255).astype(np.uint8))
        boxes.append(visible)
    return frames, boxes


def write_video(path: str, frames: Sequence[np.ndarray], fps: float) -> None:
    """``frames`` as an MP4 (``mp4v``) at ``path``, written to a
    temporary name and renamed."""
    H, W = frames[0].shape[:2]
    tmp = osp.join(
        osp.dirname(osp.abspath(path)), '.tmp-' + osp.basename(path))
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'mp4v'), fps, (W, H))
    if not writer.isOpened():
        raise OSError(f'OpenCV cannot write an MP4 video to {path}')
    for f in frames:
        writer.write(f)
    writer.release()
    os.replace(tmp, path)


# yapf: disable (its hanging indent here is flake8's E125)
def make_query_image(path: str,
                     pid: int,
                     num_ids: int,
                     look_seed: int = 0,
                     seed: int = 99,
                     size: Tuple[int, int] = (320, 240)) -> List[int]:
    # yapf: enable
    """A still scene (another background) with person ``pid`` in it;
    returns its box ``[x1, y1, x2, y2]``."""
    W, H = size
    looks = identity_looks(np.random.default_rng(look_seed), num_ids)
    rng = np.random.default_rng(seed)
    img = render_background(rng, W, H)
    height = int(0.45 * H)
    canvas, mask, (lx1, ly1, lx2, ly2) = _person(looks[pid], height,
                                                 seed * 7 + pid)
    bx, by = W // 2 - (lx2 - lx1) // 2, H - 8 - (ly2 - ly1 + 1)
    _paste(img, canvas, mask, (bx - lx1, by - ly1))
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')
    return [bx, by, bx + lx2 - lx1 + 1, by + ly2 - ly1 + 1]


def make_synthetic_videos(out_dir: str,
                          num_videos: int = 2,
                          num_frames: int = 48,
                          fps: float = 8.0,
                          size: Tuple[int, int] = (320, 240),
                          num_ids: int = 8,
                          seed: int = 0) -> Dict:
    """``video_0.mp4``, ``video_1.mp4``, ... (identity 0 walks through
    every video, each video adds others and a passer-by), ``query.jpg`` (a
    still of identity 0) and ``annotations.json`` (the query box, and per
    video its fps and each frame's boxes)."""
    os.makedirs(out_dir, exist_ok=True)
    ann = dict(fps=fps, size=list(size), videos={})
    for v in range(num_videos):
        ids = [0] + [1 + (2 * v + k) % (num_ids - 1) for k in range(2)]
        frames, boxes = render_video_frames(
            num_frames,
            size,
            ids,
            num_ids,
            look_seed=seed,
            seed=seed * 10 + v + 1,
            passersby=1)
        name = f'video_{v}.mp4'
        write_video(osp.join(out_dir, name), frames, fps)
        ann['videos'][name] = dict(identities=ids, boxes=boxes)
    box = make_query_image(
        osp.join(out_dir, 'query.jpg'), 0, num_ids, look_seed=seed, size=size)
    ann['query'] = dict(image='query.jpg', box=box, identity=0)
    with open(osp.join(out_dir, 'annotations.json'), 'w') as f:
        json.dump(ann, f)
    return ann
