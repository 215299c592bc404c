# Copyright (c) mmpsearch contributors. All rights reserved.
"""The ReID teacher's embeddings e_0 (PSDiff eq. 11), one per annotated box.

``tools/extract_teacher_embeddings.py`` writes them once; the
``DualNoiseGenerator`` reads them during PSDiff training. The file is a plain
``.npz`` (no pickle) holding

- ``img_ids``: str (n_images,), the data infos' ``img_id``;
- ``offsets``: int64 (n_images + 1,), image i owns rows
  ``offsets[i]:offsets[i + 1]``, in the order of its data info's
  ``instances``;
- ``boxes``: float32 (n_boxes, 4), x1y1x2y2 in original pixels, to check that
  the rows still belong to the boxes of the dataset;
- ``embeddings``: float32 (n_boxes, D), L2-normalised.
"""
import os.path as osp
import zipfile
from typing import Dict, List, Tuple

import numpy as np

#: The arrays of a teacher embeddings file.
ARRAYS = ('img_ids', 'offsets', 'boxes', 'embeddings')


def save_teacher_embeddings(path: str, img_ids: List[str],
                            boxes: List[np.ndarray],
                            embeddings: List[np.ndarray]) -> None:
    """Write per-image boxes (n_i, 4) and embeddings (n_i, D) to ``path``."""
    if not (len(img_ids) == len(boxes) == len(embeddings)):
        raise ValueError('img_ids, boxes and embeddings must have one entry '
                         f'per image, got {len(img_ids)}, {len(boxes)}, '
                         f'{len(embeddings)}')
    dims = {e.shape[1] for e in embeddings if len(e)}
    if len(dims) > 1:
        raise ValueError(f'embeddings of different widths: {sorted(dims)}')
    dim = dims.pop() if dims else 0
    counts = [len(b) for b in boxes]
    for img_id, b, e in zip(img_ids, boxes, embeddings):
        if len(b) != len(e):
            raise ValueError(f'{img_id}: {len(b)} boxes but {len(e)} '
                             'embeddings')
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    all_boxes = np.concatenate(
        [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        or [np.zeros((0, 4), np.float32)])
    all_embeds = np.concatenate(
        [np.asarray(e, np.float32).reshape(-1, dim) for e in embeddings]
        or [np.zeros((0, dim), np.float32)])
    np.savez(
        path,
        img_ids=np.asarray(img_ids, dtype=str),
        offsets=offsets,
        boxes=all_boxes,
        embeddings=all_embeds)


class TeacherEmbeddings:
    """Read access to a file written by :func:`save_teacher_embeddings`.

    Args:
        path (str): The ``.npz`` file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if osp.isdir(path):  # np.load's error read as a corrupt file
            raise FileNotFoundError(
                f'teacher embeddings file {path} is a folder; expected the '
                '.npz file tools/extract_teacher_embeddings.py writes')
        try:
            data = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'teacher embeddings file {path} does not exist; write it '
                'with tools/extract_teacher_embeddings.py') from None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise self._unreadable(e) from None
        if not hasattr(data, 'files'):  # a bare .npy, not an .npz
            raise ValueError(f'{path} is a single array, not the .npz '
                             f'archive of arrays {sorted(ARRAYS)} that '
                             'tools/extract_teacher_embeddings.py writes')
        missing = set(ARRAYS) - set(data.files)
        if missing:
            raise KeyError(f'{path} lacks the arrays {sorted(missing)}; it '
                           'was not written by save_teacher_embeddings')
        try:  # the arrays are read (and CRC-checked) here
            self.embeddings = data['embeddings']
            self.boxes = data['boxes']
            offsets = data['offsets']
            img_ids = data['img_ids']
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise self._unreadable(e) from None
        self._check_layout(img_ids, offsets)
        self._index: Dict[str, Tuple[int, int]] = {
            str(img_id): (int(offsets[i]), int(offsets[i + 1]))
            for i, img_id in enumerate(img_ids)
        }
        self._check_finite(img_ids, offsets)

    def _unreadable(self, error: BaseException) -> ValueError:
        first = (str(error).strip().splitlines() or [''])[0]
        return ValueError(
            f'teacher embeddings file {self.path} cannot be read '
            f'({type(error).__name__}: {first}): expected the .npz archive '
            f'of arrays {sorted(ARRAYS)} that '
            'tools/extract_teacher_embeddings.py writes; the file is '
            'truncated or corrupt (an interrupted write or copy?). '
            'Re-extract it')

    def _check_layout(self, img_ids: np.ndarray, offsets: np.ndarray) -> None:
        """One (n_boxes, D) matrix, one box per row, offsets that split the
        rows into the images."""
        e, b, n = self.embeddings, self.boxes, len(img_ids)
        if e.ndim != 2 or not np.issubdtype(e.dtype, np.floating):
            raise ValueError(f'{self.path}: embeddings must be a float '
                             f'(n_boxes, D) array, got {e.dtype} {e.shape}')
        if len(e) and e.shape[1] < 1:
            raise ValueError(f'{self.path}: embeddings have width 0')
        if b.shape != (len(e), 4):
            raise ValueError(f'{self.path}: boxes must be ({len(e)}, 4), one '
                             f'per embedding row, got {b.shape}')
        if offsets.shape != (n + 1, ) or not np.issubdtype(
                offsets.dtype, np.integer) or offsets[0] != 0 or \
                offsets[-1] != len(e) or (np.diff(offsets) < 0).any():
            raise ValueError(
                f'{self.path}: offsets must be {n + 1} non-decreasing row '
                f'indices from 0 to {len(e)} (one more than img_ids), got '
                f'{offsets.shape[0]} values from '
                f'{offsets[:1].tolist()} to {offsets[-1:].tolist()}')
        if len(set(img_ids.tolist())) != n:
            raise ValueError(f'{self.path}: img_ids repeat')

    def _check_finite(self, img_ids: np.ndarray, offsets: np.ndarray) -> None:
        """Refuse NaN / inf rows: one of them makes every loss of the batch
        NaN from the first iteration on."""
        for name, rows in (('embedding', self.embeddings), ('box',
                                                            self.boxes)):
            self._refuse_rows(
                np.flatnonzero(~np.isfinite(rows).all(axis=1)), name,
                'not finite (NaN or inf)', img_ids, offsets)
        # an all-zero row has no direction: the model is trained towards
        # nothing (loss_reid stayed at 5.0 and the run exited 0)
        self._refuse_rows(
            np.flatnonzero(~self.embeddings.any(axis=1)), 'embedding',
            'all zeros (norm 0; expected L2-normalised embeddings)', img_ids,
            offsets)

    def _refuse_rows(self, bad: np.ndarray, name: str, state: str,
                     img_ids: np.ndarray, offsets: np.ndarray) -> None:
        """A ``ValueError`` naming how many rows are ``state`` and where
        the first one is (row, box, image), unless ``bad`` is empty."""
        if not len(bad):
            return
        row = int(bad[0])
        image = int(np.searchsorted(offsets, row, side='right')) - 1
        raise ValueError(
            f'{self.path}: {len(bad)} teacher {name} row'
            f'{"s are" if len(bad) > 1 else " is"} {state}; the first is '
            f'row {row}, box {row - int(offsets[image])} of image '
            f'{str(img_ids[image])!r}. Re-extract the file with '
            'tools/extract_teacher_embeddings.py')

    def check_image(self, img_id: str, boxes: np.ndarray) -> str:
        """'' when the file holds one row per box of ``boxes`` for
        ``img_id`` (the boxes within 0.5 px), else what is wrong."""
        try:
            self.get(img_id, boxes)
        except (KeyError, ValueError) as e:
            return str(e.args[0] if e.args else e)
        return ''

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def mean(self) -> np.ndarray:
        """(D,) mean of the L2-normalised embeddings of every box in the
        file (computed once)."""
        if getattr(self, '_mean', None) is None:
            e = self.embeddings.astype(np.float64)
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            self._mean = e.mean(axis=0) if len(e) else np.zeros(self.dim)
        return self._mean

    def __contains__(self, img_id: str) -> bool:
        return img_id in self._index

    def get(self, img_id: str, boxes: np.ndarray = None) -> np.ndarray:
        """Embeddings (n, D) of the boxes of ``img_id``.

        Args:
            img_id (str): The image.
            boxes (np.ndarray, optional): The boxes the caller holds, x1y1x2y2
                in original pixels; when given, they must be the boxes the
                embeddings were extracted for (within 0.5 px).
        """
        if img_id not in self._index:
            raise KeyError(f'{self.path} has no teacher embeddings for image '
                           f'{img_id!r}; re-run '
                           'tools/extract_teacher_embeddings.py on this split')
        start, end = self._index[img_id]
        if boxes is not None:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            stored = self.boxes[start:end]
            if len(boxes) != len(stored) or not np.allclose(
                    boxes, stored, atol=0.5):
                raise ValueError(
                    f'{self.path}: the {len(stored)} boxes stored for '
                    f'{img_id!r} are not the {len(boxes)} boxes of the '
                    'dataset; the embeddings were extracted from other '
                    'annotations')
        return self.embeddings[start:end]
