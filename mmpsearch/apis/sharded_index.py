# Copyright (c) mmpsearch contributors. All rights reserved.
"""The on-disk person index: a folder that survives a kill and grows.

::

    INDEX_DIR/
      manifest.json        the model (config, checkpoint digest), embedding
                           width and dtype, score threshold, the sources
                           (image folders, videos) and the committed shards
      shards/s000003_c000001/
        embeddings.npy     (rows, D) unit embeddings, float16 or float32
        rows.npz           item (frame index or image position), bboxes,
                           scores
      journal.rank0.json   shards committed by a run that has not finished
                           (merged into the manifest when it ends, or by
                           the next run)
      search/              the faiss index (:meth:`ShardedIndex.
                           build_search_index`) and the shards it covers

Every file is written under a temporary name and renamed into place, so a
kill leaves either the old or the new version, never half of one. A shard
is one chunk of consecutive sampled frames (or images) of one source; the
chunks of a source are fixed when it is added, so a resumed, a distributed
and an uninterrupted run make the same shards.
"""
import hashlib
import io
import json
import os
import os.path as osp
import shutil
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from .vector_search import (CALIB_QUERIES, KINDS, TARGET_RECALL, VectorIndex,
                            l2_normalise)

FORMAT = 'mmpsearch-sharded-index'
VERSION = 1
MANIFEST = 'manifest.json'
SHARDS = 'shards'
SEARCH = 'search'
DTYPES = ('float16', 'float32')


class IndexModelMismatchError(ValueError):
    """The index was made by another model than the one given."""


class CorruptShardError(ValueError):
    """A shard of the index is missing, cut or altered."""


def file_digest(path: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str, obj) -> None:
    """``obj`` as JSON at ``path``: a temporary file, then a rename."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'{what} {path} could not be read ({e})') from None


def shard_name(source: int, chunk: int) -> str:
    return f's{source:06d}_c{chunk:06d}'


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_shard(folder: str, name: str, items: np.ndarray, bboxes: np.ndarray,
                scores: np.ndarray, embeddings: np.ndarray,
                dtype: str) -> dict:
    """Write one shard atomically (a temporary folder renamed into place;
    an orphan of a killed run of the same name is replaced). Returns its
    record for the manifest: name, rows, bytes, sha256."""
    shards = osp.join(folder, SHARDS)
    os.makedirs(shards, exist_ok=True)
    emb = _npy_bytes(l2_normalise(embeddings).astype(dtype))
    rows = _npz_bytes(
        item=np.asarray(items, np.int64),
        bboxes=np.asarray(bboxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32))
    tmp = osp.join(shards, f'.tmp-{name}-{os.getpid()}')
    if osp.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    for fname, data in (('embeddings.npy', emb), ('rows.npz', rows)):
        with open(osp.join(tmp, fname), 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    final = osp.join(shards, name)
    if osp.exists(final):  # written by a killed run, never recorded
        shutil.rmtree(final)
    os.rename(tmp, final)
    h = hashlib.sha256(emb)
    h.update(rows)
    return dict(
        name=name,
        rows=int(len(scores)),
        bytes=len(emb) + len(rows),
        sha256=h.hexdigest())


def check_shard_files(folder: str,
                      record: dict,
                      verify: bool = True) -> Optional[str]:
    """Why the shard of ``record`` is not what was written (None if it is):
    missing files, another size, or (``verify``) another sha256."""
    path = osp.join(folder, SHARDS, record['name'])
    files = [osp.join(path, 'embeddings.npy'), osp.join(path, 'rows.npz')]
    for f in files:
        if not osp.isfile(f):
            return f'{f} is missing'
    size = sum(osp.getsize(f) for f in files)
    if size != record['bytes']:
        return (f'it holds {size} bytes, {record["bytes"]} were written '
                '(cut or altered)')
    if verify:
        h = hashlib.sha256()
        for f in files:
            with open(f, 'rb') as fh:
                for block in iter(lambda: fh.read(1 << 22), b''):
                    h.update(block)
        if h.hexdigest() != record['sha256']:
            return ('its sha256 is not the one written (the content was '
                    'altered)')
    return None


def describe_model(model: dict) -> str:
    return (f'checkpoint {model.get("checkpoint")} (sha256 '
            f'{str(model.get("checkpoint_digest"))[:12]}...), config '
            f'{model.get("config")} (digest '
            f'{str(model.get("config_digest"))[:12]}...)')


class ShardedIndex:
    """An on-disk index folder (see the module docstring).

    Open one with :meth:`open`; the indexer
    (:func:`mmpsearch.apis.index_sources`) creates and fills it.
    """

    def __init__(self, folder: str, manifest: dict) -> None:
        self.folder = folder
        self.manifest = manifest
        self._meta = None
        self._embeds = None

    # ------------------------------------------------------------------
    # the manifest
    # ------------------------------------------------------------------
    @staticmethod
    def new_manifest(model: dict, dtype: str,
                     score_thr: Optional[float]) -> dict:
        if dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
        return dict(
            format=FORMAT,
            version=VERSION,
            model=model,
            embed_dim=None,
            dtype=dtype,
            score_thr=score_thr,
            sources=[],
            shards=[])

    @classmethod
    def open(cls, folder: str, verify: bool = True) -> 'ShardedIndex':
        """Read ``folder``'s manifest and check every shard it lists.

        Args:
            verify (bool): Also compare each shard's sha256 with the one
                written (reads every byte); sizes are checked either way.

        Raises:
            CorruptShardError: A shard is missing, of another size or
                (``verify``) of another content; the message names it.
        """
        folder = str(folder)
        path = osp.join(folder, MANIFEST)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'index folder {folder} does not exist')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{folder} is not an index: it has no {MANIFEST}; expected '
                'a folder written by tools/index_gallery.py')
        manifest = read_json(path, 'the index manifest')
        if not isinstance(manifest, dict) or \
                manifest.get('format') != FORMAT:
            raise ValueError(
                f'{path} is not a manifest of {FORMAT} '
                f'(format {manifest.get("format")!r})' if isinstance(
                    manifest, dict) else f'{path} is not a manifest')
        if manifest.get('version') != VERSION:
            raise ValueError(f'{path}: version {manifest.get("version")}, '
                             f'this mmpsearch reads version {VERSION}')
        index = cls(folder, manifest)
        index.check_shards(verify)
        return index

    def check_shards(self, verify: bool = True) -> None:
        for record in self.shards:
            why = check_shard_files(self.folder, record, verify)
            if why:
                raise CorruptShardError(
                    f'index {self.folder}: shard {record["name"]} (source '
                    f'{self.source_label(record["source"])}, items '
                    f'{record["start"]}..{record["stop"] - 1}) is corrupt: '
                    f'{why}. Refusing to use the index; run the indexer '
                    'again with --repair to drop and redo it')

    def check_model(self,
                    model: dict,
                    embed_dim: Optional[int] = None) -> None:
        """Refuse another model than the index's: another checkpoint
        digest, config digest (model and test pipeline, after the
        overrides) or embedding width. The message names both."""
        mine = self.manifest['model']
        for key, what in (('checkpoint_digest', 'checkpoint'),
                          ('config_digest', 'model config')):
            if mine.get(key) != model.get(key):
                raise IndexModelMismatchError(
                    f'index {self.folder} was made by another {what}: '
                    f'the index has {describe_model(mine)}; given '
                    f'{describe_model(model)}. Search it with its own '
                    'model, or index into a new folder')
        width = self.manifest.get('embed_dim')
        if embed_dim is not None and width is not None and \
                width != embed_dim:
            raise IndexModelMismatchError(
                f'index {self.folder} holds embeddings of width {width} '
                f'({describe_model(mine)}); the given model embeds in '
                f'{embed_dim} dimensions ({describe_model(model)})')

    @property
    def sources(self) -> List[dict]:
        return self.manifest['sources']

    @property
    def shards(self) -> List[dict]:
        return self.manifest['shards']

    @property
    def embed_dim(self) -> Optional[int]:
        return self.manifest.get('embed_dim')

    def source_label(self, source_id: int) -> str:
        src = self.sources[source_id]
        return src['path']

    def __len__(self) -> int:
        return sum(r['rows'] for r in self.shards)

    def shards_key(self) -> str:
        """A digest of the committed shards (names and contents)."""
        text = json.dumps([(r['name'], r['sha256']) for r in self.shards])
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------
    # the rows
    # ------------------------------------------------------------------
    def _load(self) -> None:
        if self._meta is not None:
            return
        src, item, boxes, scores, embeds = [], [], [], [], []
        for r in self.shards:
            path = osp.join(self.folder, SHARDS, r['name'])
            where = f'index {self.folder}: shard {r["name"]}'
            try:
                with np.load(
                        osp.join(path, 'rows.npz'), allow_pickle=False) as z:
                    arrays = {k: z[k] for k in ('item', 'bboxes', 'scores')}
                emb = np.load(
                    osp.join(path, 'embeddings.npy'),
                    mmap_mode='r',
                    allow_pickle=False)
            except Exception as e:  # zip CRC, cut header, missing keys
                raise CorruptShardError(
                    f'{where} could not be read ({type(e).__name__}: {e}); '
                    'run the indexer again with --repair') from None
            n = r['rows']
            if emb.shape != (n, self.embed_dim or emb.shape[1]) or \
                    str(emb.dtype) != self.manifest['dtype'] or \
                    arrays['bboxes'].shape != (n, 4) or \
                    len(arrays['item']) != n or len(arrays['scores']) != n:
                raise CorruptShardError(
                    f'{where}: embeddings {emb.shape} {emb.dtype}, boxes '
                    f'{arrays["bboxes"].shape}; expected {n} rows of width '
                    f'{self.embed_dim} ({self.manifest["dtype"]})')
            src.append(np.full(n, r['source'], np.int32))
            item.append(arrays['item'])
            boxes.append(arrays['bboxes'])
            scores.append(arrays['scores'])
            embeds.append(emb)
        d = self.embed_dim or 0
        self._meta = dict(
            source=np.concatenate(src) if src else np.zeros(0, np.int32),
            item=np.concatenate(item) if item else np.zeros(0, np.int64),
            bboxes=np.concatenate(boxes) if boxes else np.zeros(
                (0, 4), np.float32),
            scores=np.concatenate(scores) if scores else np.zeros(
                0, np.float32))
        self._embeds = embeds
        self._offsets = np.cumsum([0] + [len(e) for e in embeds])
        self._width = d

    @property
    def rows(self) -> Dict[str, np.ndarray]:
        """Per detection, in shard order: ``source`` (id), ``item`` (frame
        index of a video, position in an image source's files),
        ``bboxes`` (x1y1x2y2 pixels), ``scores``."""
        self._load()
        return self._meta

    def embedding_chunks(self) -> Iterator[np.ndarray]:
        """The unit embeddings, shard after shard, as float32."""
        self._load()
        for e in self._embeds:
            yield np.asarray(e, np.float32)

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        """Unit embeddings (float32) of the rows ``ids`` (sorted)."""
        self._load()
        ids = np.asarray(ids, np.int64)
        shard = np.searchsorted(self._offsets, ids, side='right') - 1
        out = np.empty((len(ids), self.embed_dim), np.float32)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self._embeds[s][ids[sel] - self._offsets[s]]
        return out

    def item_name(self, source_id: int, item: int) -> str:
        """The file of an image, ``VIDEO#frame=N`` for a video frame."""
        src = self.sources[source_id]
        if src['kind'] == 'video':
            return f'{src["path"]}#frame={int(item)}'
        return osp.join(src['path'], src['files'][int(item)])

    def item_time(self, source_id: int, item: int) -> Optional[float]:
        """Seconds from the start of the video (None for an image)."""
        src = self.sources[source_id]
        if src['kind'] != 'video':
            return None
        return float(item) / float(src['video_fps'])

    def to_gallery_index(self):
        """All detections as an in-memory
        :class:`~mmpsearch.apis.GalleryIndex` (one ``img_paths`` entry per
        image or video frame with detections, see :meth:`item_name`)."""
        from mmpsearch.apis import GalleryIndex
        rows = self.rows
        if not len(self):
            raise ValueError(f'index {self.folder} holds no detection')
        keys = rows['source'].astype(np.int64) * (1 << 40) + rows['item']
        uniq, inds = np.unique(keys, return_inverse=True)
        # in shard order (the unique keys sorted: sources, then items)
        names = [
            self.item_name(int(k >> 40), int(k & ((1 << 40) - 1)))
            for k in uniq
        ]
        embeds = np.concatenate(list(self.embedding_chunks()))
        return GalleryIndex(
            names,
            rows['bboxes'],
            rows['scores'],
            embeds,
            inds.astype(np.int64),
            source=f'index {self.folder}')

    # ------------------------------------------------------------------
    # vector search
    # ------------------------------------------------------------------
    def build_search_index(self,
                           kind: str = 'auto',
                           rebuild: bool = False,
                           **kwargs) -> VectorIndex:
        """The faiss index over the shards, persisted in ``search/``.

        Reused when it covers the same shards (names and digests) and is of
        the ``kind`` (``'auto'`` accepts what it chose before), ``factory``
        and ``nlist`` asked; rebuilt when the shards changed or
        ``rebuild``. A reused IVF-PQ index of format 1 (before ``nprobe``
        was chosen for recall) keeps its lists and codes and is calibrated
        (:meth:`VectorIndex.calibrate`, one pass over the shards), as is one
        calibrated for another ``target_recall``; its ``vectors.json`` is
        rewritten.

        Args:
            kind (str): ``'auto'``, ``'flat'`` or ``'ivfpq'`` (see
                :mod:`mmpsearch.apis.vector_search`).
            **kwargs: ``nprobe``, ``rerank``, ``nlist``, ``target_recall``,
                ``train_size``, ``factory``, ``calib_queries`` of
                :meth:`VectorIndex.build`. ``nprobe`` and ``rerank`` apply
                to a reused index too (not saved).
        """
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
        if not len(self):
            raise ValueError(f'index {self.folder} holds no detection to '
                             'search')
        folder = osp.join(self.folder, SEARCH)
        key = self.shards_key()
        if not rebuild and osp.isfile(osp.join(folder, 'vectors.json')):
            try:
                vi, info = VectorIndex.load(folder)
            except Exception:  # unreadable: rebuilt below
                vi, info = None, {}
            if vi is not None and info.get('shards_key') == key and \
                    kind in ('auto', info.get('kind')) and \
                    info.get('factory') == kwargs.get('factory') and \
                    kwargs.get('nlist') in (None, vi.nlist):
                target = kwargs.get('target_recall')
                if kwargs.get('nprobe') is None and (
                        vi.needs_calibration
                        or target not in (None, vi.target_recall)):
                    ids = np.unique(
                        np.linspace(
                            0,
                            len(self) - 1,
                            min(
                                kwargs.get('calib_queries', CALIB_QUERIES),
                                len(self))).round().astype(np.int64))
                    vi.calibrate(
                        self.fetch(ids), ids, self.embedding_chunks, target
                        or TARGET_RECALL)
                    vi.save(
                        folder, {
                            k: v
                            for k, v in info.items()
                            if k in ('shards_key', 'rows', 'factory')
                        })
                if 'rerank' in kwargs:
                    vi.rerank = int(kwargs['rerank'])
                if kwargs.get('nprobe') is not None:
                    vi.set_nprobe(kwargs['nprobe'])
                vi.reused = True
                return vi
        vi = VectorIndex.build(
            self.embedding_chunks,
            len(self),
            self.embed_dim,
            kind=kind,
            **kwargs)
        vi.save(
            folder,
            dict(
                shards_key=key, rows=len(self), factory=kwargs.get('factory')))
        vi.reused = False
        return vi

    def search_embedding(self,
                         query: np.ndarray,
                         topk: int,
                         kind: str = 'auto',
                         **kwargs):
        """Row ids and cosine similarities of the ``topk`` nearest
        detections to one unit ``query`` (D,), exactly re-ranked."""
        vi = self.build_search_index(kind, **kwargs)
        sims, ids = vi.search(query[None], topk, self.fetch)
        return sims[0], ids[0]


def merge_records(records: Sequence[dict]) -> List[dict]:
    """Shard records in index order (source, then chunk), one per name."""
    seen = {r['name']: r for r in records}
    return sorted(seen.values(), key=lambda r: (r['source'], r['chunk']))
