# Copyright (c) mmpsearch contributors. All rights reserved.
"""The gallery index: the detections and embeddings of a gallery, computed
once (:func:`~mmpsearch.apis.index_gallery`) and searched any number of times
(:func:`~mmpsearch.apis.search`).

Its file format is a plain ``.npz`` (no pickle, so loading it runs no code)
holding the arrays of :data:`INDEX_KEYS`:

- ``img_paths`` (M,) str: the gallery images;
- ``bboxes`` (N, 4) float32: x1y1x2y2 in original pixels, one row per
  detection;
- ``scores`` (N,) float32: detection scores in [0, 1];
- ``embeddings`` (N, D) float32: the detections' embeddings;
- ``image_inds`` (N,) int64: the row of ``img_paths`` each detection is in.

Every array is checked (:func:`check_index_arrays`) when an index is built
and when it is loaded, with the same checks as a results file's detections
(``mmpsearch.utils.detections``).
"""
import os
import os.path as osp
from typing import List, Optional

import numpy as np

from mmpsearch.utils.detections import check_detection_rows
from mmpsearch.utils.paths import require_file

INDEX_KEYS = ('img_paths', 'bboxes', 'scores', 'embeddings', 'image_inds')


def check_index_arrays(img_paths, bboxes, scores, embeddings, image_inds,
                       source: str) -> tuple:
    """The arrays of a :class:`GalleryIndex` after checking them; every error
    names ``source`` and the field."""

    def fail(field: str, msg: str):
        raise ValueError(f'{source}: {field} {msg}')

    def numeric(field: str, value, kinds: str, expected: str) -> np.ndarray:
        arr = np.asarray(value)
        if arr.dtype.kind not in kinds:
            fail(field, f'has dtype {arr.dtype}; expected {expected}')
        # the stored types, so that what is checked is what is used
        return arr.astype(np.int64 if kinds == 'iu' else np.float32)

    paths = np.asarray(img_paths)
    if paths.ndim != 1 or len(paths) == 0 or \
            (paths.dtype.kind != 'U' and not all(
                isinstance(p, str) for p in paths.reshape(-1))):
        fail(
            'img_paths', f'is {paths.dtype} of shape {paths.shape}; '
            'expected a non-empty list of image paths')
    paths = [str(p) for p in paths]
    boxes = numeric('bboxes', bboxes, 'iuf', 'real numbers')
    n = len(boxes) if boxes.ndim else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        fail(
            'bboxes', f'has shape {boxes.shape}; expected (N, 4) '
            '[x1, y1, x2, y2], one row per detection')
    rows = dict(
        scores=numeric('scores', scores, 'iuf', 'real numbers'),
        embeddings=numeric('embeddings', embeddings, 'iuf', 'real numbers'),
        image_inds=numeric('image_inds', image_inds, 'iu', 'integers'))
    for field, arr in rows.items():
        ndim = 2 if field == 'embeddings' else 1
        if arr.ndim != ndim or len(arr) != n:
            shape = '(N, D)' if ndim == 2 else '(N,)'
            fail(
                field, f'has shape {arr.shape}; expected {shape} with N = '
                f'{n}, the rows of bboxes (one per detection)')
    embeds, sc = rows['embeddings'], rows['scores']
    # the checks of a results file's detections (one place for both)
    check_detection_rows(boxes, sc, embeds, source)
    inds = rows['image_inds']
    bad = (inds < 0) | (inds >= len(paths))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        fail(
            'image_inds', f'row {i} = {int(inds[i])} is not an index of '
            f'img_paths; expected 0 <= image_inds < {len(paths)}')
    return paths, boxes, sc, embeds, inds


class GalleryIndex:
    """Detections and embeddings of a gallery, computed once by
    :func:`index_gallery` and reusable for any number of queries.

    Saved as a plain ``.npz`` (no pickle), so loading it runs no code.
    """

    def __init__(self,
                 img_paths: List[str],
                 bboxes: np.ndarray,
                 scores: np.ndarray,
                 embeddings: np.ndarray,
                 image_inds: np.ndarray,
                 source: str = 'GalleryIndex') -> None:
        arrays = check_index_arrays(img_paths, bboxes, scores, embeddings,
                                    image_inds, source)
        self.source = source
        (self.img_paths, self.bboxes, self.scores, self.embeddings,
         self.image_inds) = arrays

    def __len__(self) -> int:
        return len(self.bboxes)

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write the index to ``path`` (``.npz``); never overwrites an
        existing file unless ``overwrite`` is set."""
        path = str(path)
        if osp.isdir(path):
            raise IsADirectoryError(f'cannot save the gallery index to '
                                    f'{path}: it is a folder; expected a '
                                    'file name (.npz)')
        if osp.exists(path) and not overwrite:
            raise FileExistsError(f'{path} exists; pass overwrite=True to '
                                  'replace it')
        # named here: numpy's error would name the temporary file
        folder = osp.dirname(osp.abspath(path))
        if not osp.isdir(folder):
            raise FileNotFoundError(f'cannot save the gallery index to '
                                    f'{path}: the folder {folder} does not '
                                    'exist; create it first')
        tmp = path + '.tmp.npz'
        try:
            np.savez(
                tmp,
                img_paths=np.asarray(self.img_paths, dtype=str),
                bboxes=self.bboxes,
                scores=self.scores,
                embeddings=self.embeddings,
                image_inds=self.image_inds)
            os.replace(tmp, path)  # no half-written index on failure
        except BaseException:  # disk full, interrupted: no temporary left
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls,
             path: str,
             embed_dim: Optional[int] = None) -> 'GalleryIndex':
        """Read an index written by :meth:`save`, after checking every
        array's shape, dtype, range and finiteness.

        Args:
            path (str): The ``.npz`` file.
            embed_dim (int, optional): The searcher's embedding width; an
                index of another width is refused (:func:`search` checks
                it against the query embedding in any case).
        """
        require_file(
            path, 'a gallery index: an .npz file written by '
            'GalleryIndex.save')
        expected = ('expected an .npz file written by GalleryIndex.save '
                    f'with arrays {list(INDEX_KEYS)}')
        if osp.getsize(path) == 0:
            raise ValueError(f'gallery index {path} is empty (0 bytes); '
                             f'{expected}')
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:  # zipfile, pickle and format errors
            raise ValueError(f'gallery index {path} could not be read '
                             f'({type(e).__name__}: {e}); {expected}') \
                from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f'gallery index {path} holds a single array '
                             f'of shape {data.shape}, not an .npz archive; '
                             f'{expected}')
        with data:
            missing = [k for k in INDEX_KEYS if k not in data.files]
            if missing:
                raise KeyError(f'{path} is not a gallery index: it lacks '
                               f'{missing} (has {data.files}); {expected}')
            try:
                arrays = {k: data[k] for k in INDEX_KEYS}
            except Exception as e:  # a cut archive, object arrays
                raise ValueError(f'gallery index {path} could not be read '
                                 f'({type(e).__name__}: {e}); {expected}') \
                    from None
        index = cls(**arrays, source=f'gallery index {path}')
        if embed_dim is not None:
            index.check_embed_dim(embed_dim, 'the searcher')
        return index

    def check_embed_dim(self, dim: int, what: str) -> None:
        """Refuse embeddings of another width than ``what``'s ``dim``."""
        width = self.embeddings.shape[1]
        if len(self) and width != dim:
            raise ValueError(
                f'{self.source}: embeddings have width {width}, but '
                f'{what} embeds persons in {dim} dimensions; expected an '
                'index made by index_gallery with the same searcher')
