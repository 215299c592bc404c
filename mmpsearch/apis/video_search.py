# Copyright (c) mmpsearch contributors. All rights reserved.
"""Search an on-disk index (:class:`ShardedIndex`) for a query person, and
group the hits of each video into appearances.

In a video the same person is in many consecutive sampled frames: a top-10
of frames would be one appearance ten times. :func:`group_appearances`
links a video's hits frame to frame (a hit joins the appearance whose last
box, in the previous sampled frame, overlaps it by IoU >= ``iou_thr``, or,
for a person who walks further than a box width between two samples, lies
within ``max_shift`` box heights of it at nearly the same height; the
greedy, best-similarity-first association of IoU trackers, Bochinski et
al., "High-Speed Tracking-by-Detection Without Using Image Information",
AVSS 2017) and ranks appearances by their best similarity.
A still image is an appearance of its own (its best detection: the
``one_per_image`` of :func:`mmpsearch.apis.search`).
"""
import csv
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np

from ..evaluation.functional.box_ops import paired_iou
from .sharded_index import ShardedIndex


@dataclass
class IndexHit:
    """One detection of the index found for a query."""
    rank: int
    source: str  # image file or video path
    kind: str  # 'image' or 'video'
    frame: Optional[int]  # video frame index (None for an image)
    time: Optional[float]  # seconds from the video's start
    bbox: List[float]  # x1, y1, x2, y2 pixels
    similarity: float  # cosine similarity to the query
    score: float  # detection score
    row: int = -1  # row in the index


@dataclass
class Appearance:
    """Consecutive sampled frames of one video (or one still image) in
    which the query person was found."""
    rank: int
    source: str
    kind: str
    start: Optional[float]  # seconds (None for an image)
    end: Optional[float]
    best: IndexHit = None  # the best frame's hit
    hits: List[IndexHit] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        return self.best.similarity


def link_score(a: Sequence[float], b: Sequence[float], iou_thr: float,
               max_shift: float) -> float:
    """How well box ``b`` continues box ``a`` of the previous sampled
    frame: ``1 + IoU`` when the IoU reaches ``iou_thr``; else, when the
    heights differ by less than a quarter (the same depth) and the centres
    are within ``max_shift`` mean box heights, ``1 - distance / (max_shift
    * height)`` (in [0, 1)); else -1 (no link).

    Heights, not widths: a walking person's height holds from frame to
    frame, and at 2 sampled frames a second they move about 0.4 of it
    (1.4 m/s for 1.7 m), often more than their box's width.
    """
    iou = float(paired_iou(np.asarray([a]), np.asarray([b]))[0])
    if iou >= iou_thr:
        return 1.0 + iou
    ha, hb = a[3] - a[1], b[3] - b[1]
    if max_shift <= 0 or min(ha, hb) <= 0 or max(ha, hb) > 1.25 * min(ha, hb):
        return -1.0
    h = (ha + hb) / 2
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    dist = float(np.hypot(dx, dy))
    return 1.0 - dist / (max_shift * h) if dist < max_shift * h else -1.0


def group_appearances(hits: Sequence[IndexHit],
                      frame_order: Optional[dict] = None,
                      iou_thr: float = 0.3,
                      max_shift: float = 1.0) -> List[Appearance]:
    """Group ``hits`` into appearances, ranked by best similarity.

    Args:
        hits: The hits of one query (any order).
        frame_order (dict, optional): ``{video: its sampled frame
            indices, in order}``: two frames are neighbours when they are
            consecutive samples. For a video not in it, frames ``f`` and
            ``f + 1`` are.
        iou_thr (float): The IoU a box must have with the appearance's box
            in the previous sampled frame to continue it.
        max_shift (float): Or the most its centre may be from that box's,
            in box heights, at nearly the same height (see
            :func:`link_score`); 0: IoU only.
    """
    apps: List[Appearance] = []
    videos = {}
    for h in hits:
        if h.kind == 'video':
            videos.setdefault(h.source, []).append(h)
        else:
            apps.append(Appearance(0, h.source, h.kind, None, None, h, [h]))
    # stills: best detection of each image only
    best_still = {}
    for a in apps:
        cur = best_still.get(a.source)
        if cur is None or a.best.similarity > cur.best.similarity:
            best_still[a.source] = a
    apps = list(best_still.values())
    for video, vh in videos.items():
        order = (frame_order or {}).get(video)
        pos = ({
            int(f): i
            for i, f in enumerate(order)
        } if order is not None else None)
        step = (lambda f: pos[f]) if pos is not None else (lambda f: f)
        by_frame = {}
        for h in vh:
            by_frame.setdefault(h.frame, []).append(h)
        tracks: List[List[IndexHit]] = []
        open_tracks: List[List[IndexHit]] = []
        for f in sorted(by_frame):
            cands = sorted(by_frame[f], key=lambda h: -h.similarity)
            alive = [
                t for t in open_tracks if step(f) - step(t[-1].frame) == 1
            ]
            taken = set()
            nxt = []
            for h in cands:
                best, best_score = None, -1.0
                for k, t in enumerate(alive):
                    if k in taken:
                        continue
                    score = link_score(t[-1].bbox, h.bbox, iou_thr, max_shift)
                    if score >= 0 and score > best_score:
                        best, best_score = k, score
                if best is None:
                    t = [h]
                    tracks.append(t)
                else:
                    taken.add(best)
                    t = alive[best]
                    t.append(h)
                nxt.append(t)
            open_tracks = nxt
        for t in tracks:
            best = max(t, key=lambda h: (h.similarity, -h.frame))
            apps.append(
                Appearance(0, video, 'video', t[0].time, t[-1].time, best, t))
    apps.sort(key=lambda a: (-a.best.similarity, a.best.row))
    for r, a in enumerate(apps, 1):
        a.rank = r
    return apps


def _open(index: Union[str, ShardedIndex]) -> ShardedIndex:
    return index if isinstance(index, ShardedIndex) else \
        ShardedIndex.open(str(index))


def search_index(searcher,
                 index: Union[str, ShardedIndex],
                 query_image,
                 query_box: Sequence[float],
                 topk: int = 20,
                 candidates: int = 1000,
                 kind: str = 'auto',
                 iou_thr: float = 0.3,
                 model: Optional[dict] = None,
                 max_shift: float = 1.0) -> List[Appearance]:
    """Find the query person in an on-disk index.

    Args:
        searcher: From :func:`mmpsearch.apis.init_searcher`.
        index: The index folder or :class:`ShardedIndex`.
        query_image, query_box: As for :func:`mmpsearch.apis.search`.
        topk (int): Appearances returned.
        candidates (int): Detections retrieved (faiss, exactly re-ranked)
            before the grouping into appearances.
        kind (str): The vector index, see
            :meth:`ShardedIndex.build_search_index`.
        iou_thr, max_shift (float): See :func:`group_appearances`.
        model (dict, optional): :func:`mmpsearch.apis.model_identity` of
            the searcher: an index of another model is refused.

    Returns:
        list[Appearance]: Best first.
    """
    from mmpsearch.apis import embed_query
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) \
            or topk < 1:
        raise ValueError(f'topk must be a whole number >= 1, got {topk!r}')
    index = _open(index)
    query = embed_query(searcher, query_image, query_box)
    if model is not None:
        index.check_model(model, len(query))
    elif index.embed_dim not in (None, len(query)):
        index.check_model(index.manifest['model'], len(query))
    if not len(index):
        return []
    sims, ids = index.search_embedding(query, max(candidates, topk), kind)
    return group_appearances(
        hits_of_rows(index, ids, sims), frame_orders(index), iou_thr,
        max_shift)[:topk]


def frame_orders(index: ShardedIndex) -> dict:
    from .media_indexing import source_items
    return {
        s['path']: source_items(s)
        for s in index.sources
        if s['kind'] == 'video' and s['status'] != 'skipped'
    }


def hits_of_rows(index: ShardedIndex, ids: np.ndarray,
                 sims: np.ndarray) -> List[IndexHit]:
    rows = index.rows
    out = []
    for r, (i, s) in enumerate(zip(ids, sims), 1):
        src_id, item = int(rows['source'][i]), int(rows['item'][i])
        src = index.sources[src_id]
        video = src['kind'] == 'video'
        out.append(
            IndexHit(
                rank=r,
                source=src['path'] if video else index.item_name(src_id, item),
                kind='video' if video else 'image',
                frame=item if video else None,
                time=index.item_time(src_id, item),
                bbox=[float(v) for v in rows['bboxes'][i]],
                similarity=float(s),
                score=float(rows['scores'][i]),
                row=int(i)))
    return out


# ----------------------------------------------------------------------
# writing the results
# ----------------------------------------------------------------------
def _fmt_time(t: Optional[float]) -> str:
    if t is None:
        return ''
    m, s = divmod(t, 60)
    h, m = divmod(int(m), 60)
    return f'{h:d}:{m:02d}:{s:05.2f}'


def appearances_to_rows(apps: Sequence[Appearance]) -> List[dict]:
    """One flat dict per appearance (the CSV's and JSON's rows)."""
    return [
        dict(
            rank=a.rank,
            source=a.source,
            kind=a.kind,
            start=a.start,
            end=a.end,
            frames=len(a.hits),
            best_frame=a.best.frame,
            time=a.best.time,
            box=[round(v, 2) for v in a.best.bbox],
            similarity=round(a.best.similarity, 6),
            score=round(a.best.score, 6)) for a in apps
    ]


def write_hits(apps: Sequence[Appearance], out: str, query: dict) -> dict:
    """``out/hits.json`` (the query, then the appearances with all their
    hits) and ``out/hits.csv`` (one row per appearance: rank, source,
    start, end, best frame time, box, similarity, detection score)."""
    os.makedirs(out, exist_ok=True)
    rows = appearances_to_rows(apps)
    doc = dict(
        query=query,
        appearances=[
            dict(row, hits=[asdict(h) for h in a.hits])
            for row, a in zip(rows, apps)
        ])
    paths = dict(
        json=osp.join(out, 'hits.json'), csv=osp.join(out, 'hits.csv'))
    with open(paths['json'] + '.tmp', 'w') as f:
        json.dump(doc, f, indent=1)
    os.replace(paths['json'] + '.tmp', paths['json'])
    with open(paths['csv'] + '.tmp', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow([
            'rank', 'source', 'kind', 'start_s', 'end_s', 'frames',
            'best_frame', 'time_s', 'x1', 'y1', 'x2', 'y2', 'similarity',
            'score'
        ])
        for r in rows:
            w.writerow([
                r['rank'], r['source'], r['kind'],
                '' if r['start'] is None else f'{r["start"]:.3f}',
                '' if r['end'] is None else f'{r["end"]:.3f}', r['frames'],
                '' if r['best_frame'] is None else r['best_frame'],
                '' if r['time'] is None else f'{r["time"]:.3f}', *r['box'],
                r['similarity'], r['score']
            ])
    os.replace(paths['csv'] + '.tmp', paths['csv'])
    return paths


def read_frame(hit: IndexHit) -> Optional[np.ndarray]:
    """The image or video frame of ``hit`` (None if it cannot be read)."""
    if hit.kind != 'video':
        return cv2.imread(hit.source, cv2.IMREAD_COLOR)
    cap = cv2.VideoCapture(hit.source)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, hit.frame)
        ok, frame = cap.read()
    finally:
        cap.release()
    return frame if ok else None


def _tile(img: Optional[np.ndarray], box: Sequence[float], label: str,
          size: tuple, colour: tuple) -> np.ndarray:
    w, h = size
    band = 30
    tile = np.full((h + band, w, 3), 255, np.uint8)
    if img is not None:
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        H, W = img.shape[:2]
        x1, y1 = max(0, min(x1, W - 1)), max(0, min(y1, H - 1))
        x2, y2 = max(x1 + 1, min(x2, W)), max(y1 + 1, min(y2, H))
        crop = img[y1:y2, x1:x2]
        s = min(w / crop.shape[1], h / crop.shape[0])
        crop = cv2.resize(
            crop,
            (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))))
        ox, oy = (w - crop.shape[1]) // 2, (h - crop.shape[0]) // 2
        tile[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    cv2.rectangle(tile, (0, 0), (w - 1, h - 1), colour, 2)
    for k, line in enumerate(label.split('\n')[:2]):
        cv2.putText(tile, line[:24], (3, h + 12 + 13 * k),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def contact_sheet(query_img: np.ndarray,
                  query_box: Sequence[float],
                  apps: Sequence[Appearance],
                  per_row: int = 8,
                  size: tuple = (96, 192)) -> np.ndarray:
    """The query crop, then each appearance's best crop with its source
    name and time (BGR image)."""
    tiles = [_tile(query_img, query_box, 'query', size, (200, 60, 60))]
    for a in apps:
        h = a.best
        where = (f'{osp.basename(h.source)}\n{_fmt_time(h.time)} '
                 f's={h.similarity:.2f}' if h.kind == 'video' else
                 f'{osp.basename(h.source)}\ns={h.similarity:.2f}')
        tiles.append(
            _tile(
                read_frame(h), h.bbox, f'#{a.rank} {where}', size,
                (60, 160, 60)))
    rows = []
    for i in range(0, len(tiles), per_row):
        row = tiles[i:i + per_row]
        row += [np.full_like(tiles[0], 255)] * (per_row - len(row))
        rows.append(np.concatenate(row, 1))
    return np.concatenate(rows, 0)
