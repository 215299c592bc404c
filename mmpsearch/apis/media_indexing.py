# Copyright (c) mmpsearch contributors. All rights reserved.
"""Index image folders and videos into a :class:`ShardedIndex` folder:
resumable, incremental, and split over ranks (torchrun) when asked.

Sources and their items:

- an image folder: its image files (sorted), one item each;
- a video: the frames sampled at ``fps``: frame
  ``round(k * video_fps / fps)`` for k = 0, 1, ... (every frame when
  ``fps`` >= the video's rate), timestamp ``frame / video_fps``.

The items of each source are cut into chunks of ``shard_items``; each chunk
is one shard. A chunk is read, run through the model in batches of
``batch_size`` (never across chunks), and written atomically; then the
rank's journal records it. A killed run leaves whole shards and a journal:
the same command again merges them and does the rest. Ranks take disjoint,
contiguous runs of the pending chunks; the merged manifest lists the shards
by source and chunk, so the index is the same for any number of ranks.

Bad input is skipped, reported by name, and recorded in the manifest (the
rest of the run goes on: an hours-long run is not lost to one bad file):
a video OpenCV cannot open, with no frames or no frame rate, or whose
sampled frames cannot be decoded; a folder without images; an image that
cannot be decoded. A path that does not exist is refused before any work
(a typo, not bad content).
"""
import hashlib
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .sharded_index import (MANIFEST, CorruptShardError, ShardedIndex,
                            check_shard_files, file_digest, merge_records,
                            read_json, shard_name, write_json_atomic,
                            write_shard)

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def model_identity(searcher,
                   config: Optional[str],
                   checkpoint: Optional[str],
                   cfg_options: Optional[dict] = None) -> dict:
    """What the manifest records of the model: the config file, a digest
    of its model and test pipeline (after ``cfg_options``), the checkpoint
    and its sha256."""
    cfg = searcher.cfg
    try:
        pipeline = cfg.test_dataloader.dataset.get('pipeline')
    except AttributeError:
        pipeline = None
    text = json.dumps(
        dict(model=cfg.to_dict().get('model'), pipeline=pipeline),
        sort_keys=True,
        default=str)
    return dict(
        config=None if config is None else osp.abspath(str(config)),
        config_digest=hashlib.sha256(text.encode()).hexdigest(),
        checkpoint=None if checkpoint is None else osp.abspath(checkpoint),
        checkpoint_digest=(file_digest(checkpoint) if checkpoint else
                           'random weights (no checkpoint)'),
        cfg_options=cfg_options or {})


# ----------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------
def sampled_frames(frame_count: int, video_fps: float,
                   fps: float) -> np.ndarray:
    """Frame indices sampled at ``fps`` from a video of ``frame_count``
    frames at ``video_fps``."""
    if fps >= video_fps:
        return np.arange(frame_count, dtype=np.int64)
    n = int(math.ceil(frame_count * fps / video_fps)) + 1
    frames = np.floor(np.arange(n) * (video_fps / fps) + 0.5).astype(np.int64)
    return np.unique(frames[frames < frame_count])


def probe_video(path: str, fps: float) -> Tuple[Optional[dict], str]:
    """``(info, '')`` for a readable video, ``(None, why)`` for a bad one."""
    if osp.getsize(path) == 0:
        return None, 'zero-length video (0 bytes)'
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None, ('unreadable video: OpenCV cannot open it (not a '
                          'video, cut, or a codec it lacks)')
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        vfps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if count <= 0:
            return None, 'zero-length video: it has no frames'
        if not math.isfinite(vfps) or vfps <= 0:
            return None, (f'the video has no frame rate ({vfps}); the '
                          'frames to sample at --fps cannot be found')
        ok, frame = cap.read()
        if not ok or frame is None:
            return None, (f'no frame at --fps {fps} could be decoded (the '
                          f'header promises {count} frames)')
    finally:
        cap.release()
    frames = sampled_frames(count, vfps, fps)
    return dict(
        kind='video',
        path=osp.abspath(path),
        video_fps=vfps,
        frame_count=count,
        width=width,
        height=height,
        fps=fps,
        items=int(len(frames))), ''


def list_images(folder: str) -> List[str]:
    return sorted(
        f for f in os.listdir(folder) if f.lower().endswith(IMG_EXTENSIONS)
        and osp.isfile(osp.join(folder, f)))


def source_items(src: dict) -> np.ndarray:
    """The item numbers of a source: sampled frame indices of a video,
    positions 0..n-1 in an image source's files."""
    if src['kind'] == 'video':
        return sampled_frames(src['frame_count'], src['video_fps'], src['fps'])
    return np.arange(len(src['files']), dtype=np.int64)


def check_inputs(images: Sequence[str], videos: Sequence[str]) -> None:
    """Refuse (before any work) inputs that do not exist or are of the
    wrong kind, naming them."""
    for d in images:
        if not osp.isdir(d):
            raise FileNotFoundError(f'--images {d}: ' + (
                'is a file, expected a folder of '
                'images' if osp.exists(d) else 'no such folder'))
    for v in videos:
        if not osp.isfile(v):
            raise FileNotFoundError(f'--videos {v}: ' +
                                    ('is a folder, expected a video file'
                                     if osp.isdir(v) else 'no such file'))
    if not images and not videos:
        raise ValueError('nothing to index: give --images DIR and/or '
                         '--videos FILE')


def plan_sources(manifest: dict,
                 images: Sequence[str],
                 videos: Sequence[str],
                 fps: float,
                 shard_items: int,
                 log: Callable = print) -> List[dict]:
    """Add the new sources to ``manifest`` (in place) and return those that
    were skipped as bad input. A video already indexed is not added again;
    an image folder adds only its files not yet indexed. A source skipped
    by an earlier run is probed again."""
    sources = manifest['sources']
    skipped = []

    def add(entry: dict, replace: Optional[int]) -> None:
        entry['shard_items'] = shard_items
        if replace is None:
            entry['id'] = len(sources)
            sources.append(entry)
        else:
            entry['id'] = replace
            sources[replace] = entry
        if entry['status'] == 'skipped':
            skipped.append(entry)
            log(f'skipped {entry["path"]}: {entry["reason"]}')

    by_path: Dict[str, List[dict]] = {}
    for s in sources:
        by_path.setdefault(s['path'], []).append(s)
    for d in images:
        path = osp.abspath(d)
        old = by_path.get(path, [])
        retry = next((s['id'] for s in old if s['status'] == 'skipped'), None)
        done = {f for s in old if s['status'] != 'skipped' for f in s['files']}
        files = [f for f in list_images(path) if f not in done]
        if not files:
            if not old or retry is not None:
                add(
                    dict(
                        kind='images',
                        path=path,
                        files=[],
                        items=0,
                        status='skipped',
                        reason='the folder holds no image ('
                        f'{", ".join(IMG_EXTENSIONS)})'), retry)
            continue
        add(
            dict(
                kind='images',
                path=path,
                files=files,
                items=len(files),
                status='pending'), retry)
    for v in videos:
        path = osp.abspath(v)
        old = by_path.get(path, [])
        if old and old[0]['status'] != 'skipped':
            if old[0]['fps'] != fps:
                log(f'{path} is already indexed at --fps {old[0]["fps"]}; '
                    f'not indexed again at {fps}')
            continue
        info, why = probe_video(path, fps)
        retry = old[0]['id'] if old else None
        if info is None:
            add(
                dict(
                    kind='video',
                    path=path,
                    fps=fps,
                    items=0,
                    status='skipped',
                    reason=why), retry)
        else:
            add(dict(info, status='pending'), retry)
    return skipped


def all_chunks(manifest: dict) -> List[Tuple[int, int, int, int]]:
    """``(source, chunk, start, stop)`` of every chunk of every source."""
    out = []
    for s in manifest['sources']:
        if s['status'] == 'skipped':
            continue
        n, per = s['items'], s['shard_items']
        for c in range(int(math.ceil(n / per))):
            out.append((s['id'], c, c * per, min(n, (c + 1) * per)))
    return out


def split_contiguous(chunks: Sequence, world_size: int) -> List[list]:
    """Cut ``chunks`` into ``world_size`` contiguous runs of about equal
    items."""
    sizes = np.array([c[3] - c[2] for c in chunks], np.float64)
    total = sizes.sum()
    bounds = np.cumsum(sizes) - sizes / 2  # chunk centres
    owner = np.minimum(
        (bounds / max(total, 1) *
         world_size).astype(int), world_size - 1) if len(chunks) else []
    return [[c for c, o in zip(chunks, owner) if o == r]
            for r in range(world_size)]


# ----------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------
def read_image(path: str) -> Tuple[Optional[np.ndarray], str]:
    try:  # where it lives now; mat_utils held it before
        from mmpsearch.datasets.file_checks import check_image_complete
    except ImportError:
        from mmpsearch.datasets.mat_utils import check_image_complete
    try:
        check_image_complete(path)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
    except Exception as e:  # cut file, unreadable
        return None, f'corrupt image: {e}'
    if img is None or img.size == 0:
        return None, 'corrupt image: not decodable'
    return img, ''


def read_chunk(src: dict, items: np.ndarray, bad: list):
    """Yield ``(item, image, img_id)`` of the chunk's items; items that
    cannot be read go to ``bad`` as ``[item, why]``.

    Video: OpenCV directly (what mmcv's ``VideoReader`` wraps): a seek to
    the chunk's first frame, then ``grab()`` over the frames between
    samples, which skips their colour conversion; mmcv's reader asserts
    without the file name on a video it cannot open.
    """
    if src['kind'] == 'images':
        for item in items:
            name = src['files'][int(item)]
            img, why = read_image(osp.join(src['path'], name))
            if img is None:
                bad.append([int(item), why])
                continue
            yield int(item), img, name
        return
    base = osp.basename(src['path'])
    cap = cv2.VideoCapture(src['path'])
    try:
        if not cap.isOpened():
            bad.append([int(items[0]), 'the video could not be opened'])
            return
        pos = int(items[0])
        if pos:
            cap.set(cv2.CAP_PROP_POS_FRAMES, pos)
        for item in items:
            while pos < item:
                if not cap.grab():
                    break
                pos += 1
            ok, frame = cap.read() if pos == item else (False, None)
            pos += 1
            if not ok or frame is None:
                # the rest of the chunk is past what can be decoded
                bad.extend([int(i), 'frame could not be decoded']
                           for i in items[items >= item])
                return
            yield int(item), frame, f'{base}@{int(item)}'
    finally:
        cap.release()


# ----------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------
def _journal_path(folder: str, rank: int) -> str:
    return osp.join(folder, f'journal.rank{rank}.json')


def _journals(folder: str) -> List[str]:
    return sorted(
        osp.join(folder, f) for f in os.listdir(folder)
        if f.startswith('journal.rank') and f.endswith('.json'))


def _journal_temps(folder: str) -> List[str]:
    """Half-written journals (``write_json_atomic``'s temporary files) of
    a run killed between writing and renaming one."""
    return sorted(
        osp.join(folder, f) for f in os.listdir(folder)
        if f.startswith('journal.rank') and '.json.tmp' in f)


def merge_journals(folder: str, manifest: dict, log: Callable) -> int:
    """Add the shards that journals of earlier (killed) runs committed to
    ``manifest``; a journal entry whose files are not what was written
    is dropped (its chunk is redone). Returns how many were added."""
    known = {r['name'] for r in manifest['shards']}
    added = []
    for j in _journals(folder):
        try:
            data = read_json(j, 'journal')
        except ValueError as e:
            log(f'ignored {e}')
            continue
        if data.get('embed_dim') is not None:
            if manifest['embed_dim'] not in (None, data['embed_dim']):
                raise ValueError(
                    f'{j} holds embeddings of width {data["embed_dim"]}, '
                    f'the index {manifest["embed_dim"]}')
            manifest['embed_dim'] = data['embed_dim']
        for r in data.get('shards', []):
            if r['name'] in known:
                continue
            why = check_shard_files(folder, r, verify=True)
            if why:
                log(f'shard {r["name"]} of an earlier run is redone: {why}')
                continue
            added.append(r)
            known.add(r['name'])
    manifest['shards'] = merge_records(manifest['shards'] + added)
    return len(added)


def _finish(folder: str, manifest: dict, log: Callable) -> None:
    merge_journals(folder, manifest, log)
    committed: Dict[int, list] = {}
    for r in manifest['shards']:
        committed.setdefault(r['source'], []).append(r)
    for s in manifest['sources']:
        if s['status'] == 'skipped':
            continue
        recs = committed.get(s['id'], [])
        need = int(math.ceil(s['items'] / s['shard_items']))
        s['status'] = 'done' if len(recs) == need else 'pending'
        s['bad'] = [b for r in recs for b in r.get('bad', [])]
        s['detections'] = sum(r['rows'] for r in recs)
        if s['status'] == 'done' and s['items'] and \
                len(s['bad']) == s['items']:
            s['status'] = 'skipped'
            s['reason'] = ('no frame at --fps could be decoded'
                           if s['kind'] == 'video' else
                           'no image of the folder could be decoded')
    write_json_atomic(osp.join(folder, MANIFEST), manifest)
    for j in _journals(folder):
        os.remove(j)


def _dist():
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist
    except ImportError:
        pass
    return None


def index_sources(searcher,
                  out: str,
                  images: Sequence[str] = (),
                  videos: Sequence[str] = (),
                  fps: float = 2.0,
                  batch_size: int = 4,
                  shard_items: int = 64,
                  dtype: str = 'float32',
                  score_thr: Optional[float] = None,
                  model: Optional[dict] = None,
                  repair: bool = False,
                  progress: bool = True,
                  log: Callable = print) -> ShardedIndex:
    """Detect and embed every person of the images and sampled video
    frames into the index folder ``out`` (created, resumed or extended).

    Args:
        searcher: From :func:`mmpsearch.apis.init_searcher`.
        out (str): The index folder.
        images (list[str]): Image folders.
        videos (list[str]): Video files.
        fps (float): Frames sampled per second of video.
        batch_size (int): Frames per model call.
        shard_items (int): Frames (or images) per shard, fixed per source
            when it is added.
        dtype (str): ``'float32'`` or ``'float16'`` embeddings (half the
            disk; the recall cost is measured in the docs).
        score_thr (float, optional): Detections below it are not kept;
            None keeps what the model outputs.
        model (dict, optional): :func:`model_identity` of the searcher;
            an existing index of another model is refused.
        repair (bool): Drop shards that fail their check and redo them,
            instead of refusing the index.

    Under torchrun (a process group is initialised), each rank indexes its
    part and rank 0 writes the merged manifest.
    """
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.utils import ProgressBar

    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f'fps must be > 0, got {fps}')
    if batch_size < 1 or shard_items < 1:
        raise ValueError(f'batch_size and shard_items must be >= 1, got '
                         f'{batch_size} and {shard_items}')
    check_inputs(images, videos)
    dist = _dist()
    rank = dist.get_rank() if dist else 0
    world = dist.get_world_size() if dist else 1
    say = log if rank == 0 else (lambda *a, **k: None)
    model = model or {}
    mpath = osp.join(out, MANIFEST)
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        if osp.isfile(mpath):
            index = ShardedIndex(out, read_json(mpath, 'the index manifest'))
            manifest = index.manifest
            index.check_model(model)
            for key, given in (('dtype', dtype), ('score_thr', score_thr)):
                if manifest[key] != given:
                    raise ValueError(
                        f'index {out} stores {key} = {manifest[key]!r}; '
                        f'given {given!r}. Index with the same setting, '
                        'or into a new folder')
            try:
                index.check_shards(verify=True)
            except CorruptShardError:
                if not repair:
                    raise
                keep = []
                for r in manifest['shards']:
                    why = check_shard_files(out, r, True)
                    if why:
                        say(f'--repair: shard {r["name"]} dropped and '
                            f'redone ({why})')
                    else:
                        keep.append(r)
                manifest['shards'] = keep
        else:
            manifest = ShardedIndex.new_manifest(model, dtype, score_thr)
        merge_journals(out, manifest, say)
        plan_sources(manifest, images, videos, fps, shard_items, say)
        write_json_atomic(mpath, manifest)
        # merged into the manifest just written; temporaries of a killed run
        for j in _journals(out) + _journal_temps(out):
            os.remove(j)
    if dist:
        dist.barrier()
        manifest = read_json(mpath, 'the index manifest')
    done = {r['name'] for r in manifest['shards']}
    pending = [
        c for c in all_chunks(manifest) if shard_name(c[0], c[1]) not in done
    ]
    mine = split_contiguous(pending, world)[rank]
    total = sum(c[3] - c[2] for c in mine)
    say(f'index {out}: {len(manifest["sources"])} sources, '
        f'{len(done)} shards done, {len(pending)} to do '
        f'({sum(c[3] - c[2] for c in pending)} frames/images' +
        (f', {world} ranks' if world > 1 else '') + ')')
    journal = dict(embed_dim=manifest['embed_dim'], shards=[])
    bar = ProgressBar(total, file=sys.stdout) \
        if progress and rank == 0 and total else None
    thr = -np.inf if score_thr is None else score_thr
    start, frames = time.time(), 0
    for source_id, chunk, lo, hi in mine:
        src = manifest['sources'][source_id]
        items = source_items(src)[lo:hi]
        bad: list = []
        got_items, boxes, scores, embeds = [], [], [], []
        reader = read_chunk(src, items, bad)
        while True:
            batch = [x for _, x in zip(range(batch_size), reader)]
            if not batch:
                break
            datas = [
                searcher.test_pipeline(
                    dict(
                        img=img,
                        img_id=name,
                        img_path=name,
                        split='gallery',
                        height=img.shape[0],
                        width=img.shape[1],
                        instances=[])) for _, img, name in batch
            ]
            with torch.no_grad():
                preds = searcher.test_step(pseudo_collate(datas))
            for (item, _, _), ds in zip(batch, preds):
                p = ds.pred_instances
                keep = (p.scores >= thr).cpu().numpy()
                e = p.embeddings.detach().float().cpu().numpy()
                if journal['embed_dim'] is None:
                    journal['embed_dim'] = int(e.shape[1])
                got_items.append(np.full(int(keep.sum()), item, np.int64))
                boxes.append(p.bboxes.detach().float().cpu().numpy()[keep])
                scores.append(p.scores.detach().float().cpu().numpy()[keep])
                embeds.append(e[keep])
            frames += len(batch)
            if bar:
                bar.update(len(batch))
        for item, why in bad:
            name = (
                src['files'][item]
                if src['kind'] == 'images' else f'frame {item}')
            log(f'\nskipped {src["path"]}: {name}: {why}')
        if bar and bad:
            bar.update(len(bad))
        d = journal['embed_dim'] or manifest['embed_dim'] or 0
        if manifest['embed_dim'] not in (None, d) and d:
            raise ValueError(
                f'the model embeds in {d} dimensions; index {out} holds '
                f'{manifest["embed_dim"]}')
        record = write_shard(
            out, shard_name(source_id, chunk),
            np.concatenate(got_items) if got_items else np.zeros(0, np.int64),
            np.concatenate(boxes) if boxes else np.zeros((0, 4)),
            np.concatenate(scores) if scores else np.zeros(0),
            np.concatenate(embeds) if embeds else np.zeros((0, d)),
            manifest['dtype'])
        record.update(
            source=source_id, chunk=chunk, start=lo, stop=hi, bad=bad)
        journal['shards'].append(record)
        write_json_atomic(_journal_path(out, rank), journal)
    seconds = time.time() - start
    if bar:
        sys.stdout.write('\n')
    if frames:
        say(f'rank {rank}: {frames} frames/images in {seconds:.1f} s, '
            f'{frames / max(seconds, 1e-9):.2f} frames/s')
    if dist:
        dist.barrier()
    if rank == 0:
        manifest = read_json(mpath, 'the index manifest')
        _finish(out, manifest, say)
    if dist:
        dist.barrier()
    index = ShardedIndex(out, read_json(mpath, 'the index manifest'))
    index.throughput = dict(frames=frames, seconds=seconds)
    return index


def bad_inputs(index: ShardedIndex) -> List[str]:
    """Lines naming every skipped source and unreadable item."""
    lines = []
    for s in index.sources:
        if s['status'] == 'skipped':
            lines.append(f'{s["path"]}: {s["reason"]}')
        for item, why in s.get('bad', []):
            name = (
                s['files'][item] if s['kind'] == 'images' else f'frame {item}')
            lines.append(f'{s["path"]}: {name}: {why}')
    return lines
