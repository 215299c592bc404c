# Copyright (c) mmpsearch contributors. All rights reserved.
"""The Python API: run a trained person searcher on your own pictures.

>>> from mmpsearch.apis import init_searcher, index_gallery, search
>>> searcher = init_searcher('configs/psdiff/psdiff_r50_cuhk.py', 'ckpt.pth')
>>> gallery = index_gallery(searcher, 'my_scenes/')      # run once
>>> gallery.save('my_scenes.npz')                        # reuse later
>>> hits = search(searcher, 'query.jpg', [x1, y1, x2, y2], gallery, topk=5)
>>> hits[0].img_path, hits[0].bbox, hits[0].similarity, hits[0].score

The index itself (:class:`~mmpsearch.apis.gallery_index.GalleryIndex`, its
``.npz`` format and checks) is in ``gallery_index.py``.
"""
import numbers
import os
import os.path as osp
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmcv.transforms import Compose
from mmdet.structures.bbox import scale_boxes
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)

from mmpsearch.datasets.file_checks import check_image_complete
from mmpsearch.registry import MODELS
from mmpsearch.utils import register_all_modules, safe_checkpoint_loading
from mmpsearch.utils.cfg_signature import check_config_keys
from mmpsearch.utils.checkpoint import check_checkpoint_fits
from mmpsearch.utils.config import check_cfg_options
from mmpsearch.utils.detections import check_query_embedding
from mmpsearch.utils.paths import require_file
from mmpsearch.utils.thresholds import check_unit_interval
from .gallery_index import GalleryIndex

ImageType = Union[str, Path, np.ndarray]
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def _type_name(t) -> str:
    return getattr(t, '__name__', t)


def get_test_pipeline_cfg(cfg: Config) -> list:
    """The test pipeline of ``cfg`` (the first dataset of a ConcatDataset).

    The file loader is replaced by mmdet's ``LoadImageFromNDArray``: the API
    reads images itself, so that an unreadable file is named in the error.
    """
    dataset = cfg.test_dataloader.dataset
    while 'pipeline' not in dataset:
        if 'datasets' in dataset:
            dataset = dataset['datasets'][0]
        elif 'dataset' in dataset:
            dataset = dataset['dataset']
        else:
            raise KeyError(f'{cfg.filename}: test_dataloader.dataset has no '
                           'pipeline')
    pipeline = [dict(t) for t in dataset['pipeline']]
    if _type_name(pipeline[0]['type']) != 'LoadImageFromFile':
        raise ValueError(f'{cfg.filename}: the test pipeline must start with '
                         'LoadImageFromFile, got '
                         f'{_type_name(pipeline[0]["type"])}')
    pipeline[0] = dict(type='mmdet.LoadImageFromNDArray')
    return pipeline


def init_searcher(config: Union[str, Path, Config],
                  checkpoint: Optional[str] = None,
                  device: str = 'cpu',
                  cfg_options: Optional[dict] = None,
                  strict: bool = True) -> nn.Module:
    """Build a person searcher from a config and load its checkpoint.

    Args:
        config (str | Config): Config file path or :obj:`Config`.
        checkpoint (str, optional): Checkpoint path (loaded safely, with
            ``weights_only=True``). Without it the weights are random.
        device (str): ``'cpu'`` or ``'cuda:0'`` ...
        cfg_options (dict, optional): Overrides merged into the config, e.g.
            ``{'model.test_cfg.sampling_steps': 4}``.
        strict (bool): Refuse a checkpoint that leaves weights of the model
            unloaded, holds keys the model does not have or weights of
            another shape (:class:`~mmpsearch.utils.checkpoint.
            CheckpointMismatchError`, naming the file and the first keys).
            False loads what fits, with a warning. Defaults to True.
            A checkpoint with a NaN or infinite weight is refused either
            way (:class:`~mmpsearch.utils.checkpoint.
            NonFiniteCheckpointError`, naming the first such tensor).

    Returns:
        nn.Module: The model in eval mode, with ``.cfg`` and
        ``.test_pipeline`` attached.
    """
    if isinstance(config, (str, Path)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {config} does not exist')
        config = Config.fromfile(str(config))
    elif not isinstance(config, Config):
        raise TypeError('config must be a filename or Config object, '
                        f'but got {type(config)}')
    register_all_modules(init_default_scope=False)
    if cfg_options is not None:
        # a list or a misspelled key used to fail raw or be ignored
        if not isinstance(cfg_options, dict):
            raise TypeError(
                'init_searcher: cfg_options must be a dict of dotted keys, '
                "e.g. {'model.test_cfg.sampling_steps': 4}, got "
                f'{type(cfg_options).__name__} {cfg_options!r}')
        check_cfg_options(config, cfg_options, 'init_searcher: cfg_options')
        check_config_keys(config, cfg_options)
        config.merge_from_dict(cfg_options)
    init_default_scope(config.get('default_scope', 'mmpsearch'))
    if checkpoint is not None:
        # the checkpoint holds every weight; do not fetch pretrained ones
        backbone = config.model.get('backbone', {})
        if 'init_cfg' in backbone:
            backbone['init_cfg'] = None
        # a two-step model's checkpoint holds its ReID and detector too
        if 'reid' in config.model:
            config.model.reid['checkpoint'] = None
        detector_backbone = config.model.get('detector',
                                             {}).get('backbone', {})
        if 'init_cfg' in detector_backbone:
            detector_backbone['init_cfg'] = None
    model = MODELS.build(config.model)
    if checkpoint is not None:
        require_file(checkpoint, 'a checkpoint (.pth) file')
        with safe_checkpoint_loading():  # weights_only + the allow-list
            ckpt = _load_checkpoint(checkpoint, map_location='cpu')
        check_checkpoint_fits(
            model,
            ckpt,
            checkpoint,
            allow_partial=not strict,
            allow_empty=not strict,  # opted in: even if nothing loads
            hint='Pass strict=False to init_searcher to load it anyway')
        _load_checkpoint_to_model(model, ckpt, strict=False)
    model.cfg = config
    model.test_pipeline = Compose(get_test_pipeline_cfg(config))
    model.to(device)
    model.eval()
    return model


def _check_searcher(searcher, fn: str) -> None:
    """A ``TypeError`` unless ``searcher`` is what :func:`init_searcher`
    returns (a config path or None failed later, as an AttributeError)."""
    if isinstance(searcher, nn.Module) and hasattr(searcher, 'test_pipeline'):
        return
    hint = ' (a config file? build the searcher first: searcher = ' \
        'init_searcher(config, checkpoint))' \
        if isinstance(searcher, (str, Path, Config)) else ''
    raise TypeError(f'{fn}: searcher must be the model init_searcher '
                    f'returns, got {type(searcher).__name__} {searcher!r}'
                    f'{hint}'[:400])


def _require_image_file(path: str) -> None:
    if osp.isdir(path):
        raise FileNotFoundError(f'image {path} is a folder, not an image '
                                'file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'image {path} does not exist')


def _read_image(img: ImageType, what: str = 'image') -> np.ndarray:
    if not isinstance(img, (str, Path, np.ndarray)):
        # an int or None used to be read as the file name '5' / 'None'
        raise TypeError(f'{what} must be an image path (str or Path) or an '
                        'H x W x 3 uint8 BGR array, got '
                        f'{type(img).__name__} {img!r}'[:300])
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError('an image array must be H x W x 3 (BGR), got '
                             f'shape {img.shape}')
        if img.dtype != np.uint8:
            # a float array in [0, 1] would be normalised as if 0..255
            raise ValueError('an image array must be uint8 (BGR, 0..255, as '
                             f'mmcv.imread gives), got dtype {img.dtype}')
        return img
    path = str(img)
    _require_image_file(path)
    check_image_complete(path)  # a cut JPEG: named here, not "not decodable"
    try:
        array = mmcv.imread(path)
    except Exception as e:  # mmcv/cv2 raise various errors for bad files
        raise ValueError(f'cannot read image {path}: {e}') from None
    if array is None or array.size == 0:
        raise ValueError(f'cannot read image {path}: not a decodable image')
    return array


def _check_box(box: Sequence[float], img: np.ndarray, name: str) -> np.ndarray:
    if isinstance(box, torch.Tensor):
        box = box.detach().cpu().numpy()
    # strings were parsed ('5' -> 5.0) or failed in numpy: say what is wanted
    numeric = box.dtype.kind in 'iuf' if isinstance(box, np.ndarray) else \
        isinstance(box, (list, tuple)) and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool)
            for v in box)
    if not numeric:
        raise TypeError('query box must be a list, tuple or array of 4 '
                        'numbers [x1, y1, x2, y2] in pixels, got '
                        f'{type(box).__name__} {box!r}'[:300])
    box = np.asarray(box, dtype=np.float32).reshape(-1)
    if box.shape != (4, ) or not np.isfinite(box).all():
        raise ValueError(f'query box must be 4 finite numbers [x1, y1, x2, '
                         f'y2], got {box.tolist()}')
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box.tolist()
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f'query box {box.tolist()} is not inside {name} '
                         f'({w} x {h} pixels); expected 0 <= x1 < x2 <= {w} '
                         f'and 0 <= y1 < y2 <= {h}')
    return box


def _prepare(searcher: nn.Module,
             img: np.ndarray,
             img_id: str,
             split: str,
             box: Optional[np.ndarray] = None) -> dict:
    """One image through the searcher's test pipeline."""
    instances = [] if box is None else [
        dict(bbox=box.tolist(), bbox_label=0, person_id=-1, ignore_flag=0)
    ]
    return searcher.test_pipeline(
        dict(
            img=img,
            img_id=img_id,
            img_path=img_id,
            split=split,
            height=img.shape[0],
            width=img.shape[1],
            instances=instances))


@torch.no_grad()
def _run(searcher: nn.Module,
         img: np.ndarray,
         img_id: str,
         split: str,
         box: Optional[np.ndarray] = None):
    data = _prepare(searcher, img, img_id, split, box)
    return searcher.test_step(pseudo_collate([data]))[0].pred_instances


@dataclass
class SearchMatch:
    """One ranked hit of :func:`search`."""
    rank: int
    img_path: str
    bbox: np.ndarray  # float32 (4,), x1y1x2y2 pixels
    similarity: float  # cosine similarity to the query
    score: float  # detection score


def list_gallery_images(gallery: Union[str, Path, Sequence]) -> List[str]:
    """The image files of a folder (sorted), or the given list of paths."""
    expected = ('expected a folder of images, a list of image paths or a '
                'GalleryIndex')
    if isinstance(gallery, (str, Path)):
        folder = str(gallery)
        if osp.isfile(folder):
            hint = f'GalleryIndex.load({folder!r})' if folder.endswith(
                '.npz') else f'[{folder!r}]'
            raise ValueError(f'gallery {folder} is a single file; {expected}'
                             f' (e.g. {hint})')
        if not osp.isdir(folder):
            raise FileNotFoundError(f'gallery folder {folder} does not exist')
        paths = sorted(
            osp.join(folder, f) for f in os.listdir(folder)
            if f.lower().endswith(IMG_EXTENSIONS))
        if not paths:
            raise ValueError(f'gallery folder {folder} holds no image '
                             f'({", ".join(IMG_EXTENSIONS)})')
        return paths
    # bytes, a dict or an int used to be iterated as image names (or not)
    if isinstance(gallery,
                  (bytes, dict)) or not isinstance(gallery,
                                                   (list, tuple, np.ndarray)):
        raise TypeError(f'gallery: {expected}, got '
                        f'{type(gallery).__name__} {gallery!r}'[:300])
    for i, p in enumerate(gallery):
        if not isinstance(p, (str, Path)):
            raise TypeError(f'gallery[{i}] is {type(p).__name__} {p!r}; '
                            'expected an image path (str or Path)'[:300])
    paths = [str(p) for p in gallery]
    if not paths:
        raise ValueError('the gallery is empty')
    return paths


def index_gallery(searcher: nn.Module,
                  gallery: Union[str, Path, Sequence[str]],
                  score_thr: Optional[float] = None) -> GalleryIndex:
    """Detect the persons of every gallery image and embed them.

    Args:
        searcher: From :func:`init_searcher`.
        gallery: A folder of images or a list of image paths.
        score_thr (float, optional): Detections below this score are
            dropped. None keeps what the model outputs, i.e. its own
            ``test_cfg.score_thr`` (0.5, the protocol's, in the paper
            configs; 0.3 in the synthetic one).
    """
    _check_searcher(searcher, 'index_gallery')
    if score_thr is not None:
        score_thr = check_unit_interval(score_thr, 'index_gallery: score_thr')
    paths = list_gallery_images(gallery)
    for path in paths:  # all there before the first one is indexed
        _require_image_file(path)
    bboxes, scores, embeds, inds = [], [], [], []
    for i, path in enumerate(paths):
        pred = _run(searcher, _read_image(path), osp.basename(path), 'gallery')
        keep = pred.scores >= (
            score_thr if score_thr is not None else -float('inf'))
        bboxes.append(pred.bboxes[keep].cpu().numpy())
        scores.append(pred.scores[keep].cpu().numpy())
        embeds.append(pred.embeddings[keep].cpu().numpy())
        inds.append(np.full(int(keep.sum()), i, dtype=np.int64))
    dim = embeds[0].shape[1] if embeds else 0
    return GalleryIndex(paths,
                        np.concatenate(bboxes).reshape(-1, 4),
                        np.concatenate(scores),
                        np.concatenate(embeds).reshape(-1, dim),
                        np.concatenate(inds))


def embed_query(searcher: nn.Module, query_image: ImageType,
                query_box: Sequence[float]) -> np.ndarray:
    """The L2-normalised embedding (D,) of the person in ``query_box``."""
    _check_searcher(searcher, 'embed_query')
    name = query_image if not isinstance(query_image, np.ndarray) else \
        'the query image'
    img = _read_image(query_image, 'the query image')
    box = _check_box(query_box, img, str(name))
    # the file name is the img_id, as in the datasets (PSDiff seeds by it)
    img_id = 'query' if isinstance(query_image, np.ndarray) else \
        osp.basename(str(query_image))
    pred = _run(searcher, img, img_id, 'query', box)
    embedding = pred.embeddings[0].cpu().numpy().astype(np.float32)
    # as a results file's query: a zero vector ranks nothing
    check_query_embedding(embedding, f'the query in {name}')
    return embedding / max(float(np.linalg.norm(embedding)), 1e-12)


def search(searcher: nn.Module,
           query_image: ImageType,
           query_box: Sequence[float],
           gallery: Union[GalleryIndex, str, Path, Sequence[str]],
           topk: int = 10,
           one_per_image: bool = True) -> List[SearchMatch]:
    """Find the query person in the gallery.

    Args:
        searcher: From :func:`init_searcher`.
        query_image: Path or BGR array of the image that shows the query.
        query_box: [x1, y1, x2, y2] of the query person, in pixels.
        gallery: A :class:`GalleryIndex`, or a folder / list of images
            (indexed on the fly; index once with :func:`index_gallery` to
            search many queries).
        topk (int): How many hits to return.
        one_per_image (bool): Keep only the best detection of each image.

    Returns:
        list[SearchMatch]: Ranked by cosine similarity, best first.
    """
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) \
            or topk < 1:
        raise ValueError(f'topk must be a whole number >= 1, got {topk!r}')
    _check_searcher(searcher, 'search')
    if not isinstance(gallery, GalleryIndex):  # its type, before any work
        gallery = list_gallery_images(gallery)
    query = embed_query(searcher, query_image, query_box)
    if not isinstance(gallery, GalleryIndex):
        gallery = index_gallery(searcher, gallery)
    gallery.check_embed_dim(len(query), 'the searcher')
    if len(gallery) == 0:
        return []
    embeds = gallery.embeddings / np.maximum(
        np.linalg.norm(gallery.embeddings, axis=1, keepdims=True), 1e-12)
    sims = embeds @ query
    # ties broken by detection score, then by position (deterministic)
    order = np.lexsort((np.arange(len(sims)), -gallery.scores, -sims))
    if one_per_image:
        _, first = np.unique(gallery.image_inds[order], return_index=True)
        order = order[np.sort(first)]
    return [
        SearchMatch(
            rank=r + 1,
            img_path=gallery.img_paths[gallery.image_inds[j]],
            bbox=gallery.bboxes[j],
            similarity=float(sims[j]),
            score=float(gallery.scores[j])) for r, j in enumerate(order[:topk])
    ]


@torch.no_grad()
def denoising_steps(searcher: nn.Module,
                    image: ImageType) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Boxes and scores of every sampling step for one gallery image
    (PSDiff Fig. 6): ``[(boxes (N, 4) original pixels, scores (N,)), ...]``.

    Only for denoising searchers (those with ``denoise``, i.e. PSDiff).
    """
    if not hasattr(searcher, 'denoise'):
        raise TypeError(f'{type(searcher).__name__} has no sampling steps; '
                        '--show-steps needs a PSDiff (denoising) model')
    img = _read_image(image)
    name = osp.basename(str(image)) if not isinstance(image, np.ndarray) \
        else 'image'
    data = _prepare(searcher, img, name, 'gallery')
    data = searcher.data_preprocessor(pseudo_collate([data]), False)
    meta = data['data_samples'][0].metainfo
    feats = searcher.extract_feat(data['inputs'])
    sx, sy = meta['scale_factor']
    out = []
    for outs in searcher.denoise(feats, [meta]):
        # network-input -> original pixels, as the searcher's predictions
        boxes = scale_boxes(outs['bboxes'][0].cpu(), (1.0 / sx, 1.0 / sy))
        scores = outs['cls_scores'][0].sigmoid().amax(-1).cpu()
        out.append((boxes.numpy(), scores.numpy()))
    return out
