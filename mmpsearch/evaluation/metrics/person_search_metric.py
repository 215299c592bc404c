# Copyright (c) mmpsearch contributors. All rights reserved.
"""The standard person-search metric (CUHK-SYSU and PRW)."""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmengine.structures import BaseDataElement

from mmpsearch.registry import METRICS
from ..functional import (CROSS_CAMERA_SUFFIX, DETECTION_KEYS, SEARCH_KEYS,
                          evaluate_person_search, gallery_size_suffix,
                          subset_suffix)
from ..functional.gallery import PlainKeyError
from ..functional.protocol_settings import check_protocol_settings
from ..results_io import (load_search_results, require_results_file,
                          save_search_results)


def load_protocol(dataset_type: str,
                  data_root: str,
                  gallery_size: Optional[int] = None):
    """The dataset's protocol, read from its released files.

    The loaders are imported when called, so scoring a results file does
    not import the dataset classes before it needs them.
    """
    import mmpsearch.datasets as datasets
    if dataset_type == 'cuhk':
        return datasets.load_cuhk_protocol(data_root, gallery_size)
    if dataset_type == 'prw':
        return datasets.load_prw_protocol(data_root)
    raise ValueError(f'unknown dataset type {dataset_type!r}, expected '
                     '"cuhk" or "prw"')


def load_results_and_protocol(results_file: str,
                              dataset_type: str,
                              data_root: str,
                              gallery_size: int = 100) -> Tuple[dict, Any]:
    """A saved results file (``tools/test.py --out``) and the protocol of the
    dataset it was tested on, each checked: ``(results, protocol)``.

    The file is looked for first (a missing file or a folder is named before
    the dataset is read); ``gallery_size`` is CUHK-SYSU's (PRW has one
    gallery).
    """
    require_results_file(results_file)
    protocol = load_protocol(dataset_type, data_root,
                             gallery_size if dataset_type == 'cuhk' else None)
    return load_search_results(results_file, protocol), protocol


def subset_row(subset) -> Tuple[str, str]:
    """``(label, key suffix)`` of a ``QuerySubset`` in
    :meth:`PersonSearchMetric.format_table`: e.g. ``('occlusion (187)',
    '_occlusion')``, ``('occlusion g50 (187)', '_occlusion_g50')``."""
    size = subset.protocol.gallery_size
    label = subset.name + ('' if size is None else f' g{size}')
    return (f'{label} ({len(subset.protocol.queries)})',
            subset_suffix(subset.name, size))


def _numpy(x: Any, dtype=np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to('cpu', torch.float32).numpy()
    return np.asarray(x, dtype=dtype)


def _get(sample: Any, key: str, default: Any = None) -> Any:
    """A field of a data sample, whether a ``DetDataSample`` or the dict
    that mmengine's ``Evaluator`` makes of it."""
    if isinstance(sample, BaseDataElement):
        return sample.get(key, default)
    return sample.get(key, default)


@METRICS.register_module()
class PersonSearchMetric(BaseMetric):
    """Person-search mAP, CMC top-k and detection AP / recall under the
    standard CUHK-SYSU and PRW protocols.

    The protocol (PSDiff, Jia et al. 2023, Sec. IV-A; DiffPS, Kim et al.
    ICCV 2025, Sec. 4.1 -- the OIM / NAE / SeqNet evaluation): detections
    scoring < ``score_thr`` are dropped; a query's similarity to a detection
    is the dot product of the L2-normalised embeddings; in each gallery
    image holding the query only the most similar detection whose IoU with
    the ground truth reaches ``min(0.5, wh/((w+10)(h+10)))`` is a true
    positive; AP is the tie-grouped AP over all kept detections of the
    query's gallery times the share of gallery images holding the query
    whose person was found; top-k = 1 if a true positive is among the k most
    similar detections (a non-matching detection tied with it ranks ahead).
    CUHK-SYSU searches each query's ``TestG{N}`` gallery; PRW all test
    frames but the query's own (cross-camera: only other cameras' frames).
    Detection: AP and recall at IoU 0.5 over all / labeled gallery persons,
    one-to-one matching, AP times recall.

    The test dataloader yields the gallery split then the query split; the
    model returns ``pred_instances`` (``bboxes`` in original pixels,
    ``scores``, ``embeddings``) for each image, and for a query exactly one
    instance (the given box). ``split`` and ``query_index`` come from the
    meta information.

    Returned keys (fractions in [0, 1], under ``prefix``, default
    ``'search'``):

    - ``mAP``, ``top1``, ``top5``, ``top10``: search under the first gallery
      size (CUHK-SYSU) or over all frames (PRW);
    - ``det_ap``, ``det_recall``, ``labeled_det_ap``, ``labeled_det_recall``
      (labeled: only persons with an id are ground truth, so detections of
      unlabeled persons count as false positives in ``labeled_det_ap``, as
      in the public code, which prints only the labeled recall);
    - ``mAP_g{N}``, ``top1_g{N}``, ``top5_g{N}``, ``top10_g{N}`` for every
      further CUHK-SYSU gallery size N (e.g. ``gallery_size=[100, 50,
      4000]`` gives ``mAP``, ``mAP_g50``, ``mAP_g4000``);
    - ``mAP_cross_cam``, ``top1_cross_cam``, ... with PRW and
      ``cross_camera=True`` (the unsuffixed keys stay the standard
      protocol, so both are reported);
    - ``mAP_occlusion``, ``top1_occlusion``, ..., ``mAP_resolution``, ...
      with CUHK-SYSU ``subsets``: the released occlusion (187 queries) and
      low-resolution (290 queries) subsets of
      ``annotation/test/subset/{Occlusion,Resolution}.mat``, each query
      searched in the gallery list of the subset file, as the public codes
      do (``subset_gallery_size=N``: in its ``TestG{N}`` list instead, keys
      ``mAP_occlusion_g{N}``, ...).

    Args:
        dataset_type (str): ``'cuhk'`` or ``'prw'``.
        data_root (str): Root of the released dataset (the protocol is read
            from its annotation files).
        gallery_size (int | Sequence[int]): CUHK-SYSU gallery size(s), among
            50, 100, 500, 1000, 2000, 4000; the first one gives the
            unsuffixed keys. Ignored for PRW (only its default is allowed).
        cross_camera (bool): PRW: also report the cross-camera protocol.
        score_thr (float): Score threshold of gallery detections.
        results_file (str, optional): Also dump the results (the format of
            ``mmpsearch.evaluation.results_io``) to this pickle.
        overwrite (bool): Allow ``results_file`` to replace a file.
        collect_device (str): ``'cpu'`` or ``'gpu'``.
        prefix (str, optional): Prefix of the metric names.
        subsets (str | Sequence[str]): CUHK-SYSU query subsets to report,
            among ``'occlusion'`` and ``'resolution'``; their files must
            exist. ``'auto'``: those whose files exist under ``data_root``.
            Default: none.
        subset_gallery_size (int, optional): ``None``: search each subset
            query in the gallery list of the subset file; ``N``: in its
            ``TestG{N}.mat`` list.
        cbgm (bool): Re-rank the search with Context Bipartite Graph
            Matching (SeqNet, Li & Miao, AAAI 2021; ``functional/cbgm.py``):
            every search key is then the "+CBGM" number. The context
            persons of a query come from the detections of its image in
            the gallery split.
        cbgm_k1 (int, optional): CBGM re-scores the gallery images holding
            the query's ``cbgm_k1`` most similar detections; ``None``: 10
            (CUHK-SYSU) or 30 (PRW), SeqNet's values.
        cbgm_k2 (int, optional): Context persons, the query included;
            ``None``: 3 (CUHK-SYSU) or 4 (PRW).
    """
    default_prefix: Optional[str] = 'search'
    #: Saved as the ``"meta"`` entry of ``results_file`` when set (tools/
    #: test.py puts the model's test settings here, eval_search.py reads
    #: them back into its JSON's "settings").
    results_meta: Optional[dict] = None

    def __init__(self,
                 dataset_type: str,
                 data_root: str,
                 gallery_size: Union[int, Sequence[int]] = 100,
                 cross_camera: bool = False,
                 score_thr: float = 0.5,
                 results_file: Optional[str] = None,
                 overwrite: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None,
                 subsets: Union[str, Sequence[str]] = (),
                 subset_gallery_size: Optional[int] = None,
                 cbgm: bool = False,
                 cbgm_k1: Optional[int] = None,
                 cbgm_k2: Optional[int] = None) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir)
        # every protocol option, checked before any data is read
        settings = check_protocol_settings(dataset_type, data_root,
                                           gallery_size, cross_camera,
                                           score_thr, subsets,
                                           subset_gallery_size, cbgm, cbgm_k1,
                                           cbgm_k2)
        if results_file is not None and not overwrite and \
                osp.exists(results_file):
            raise FileExistsError(
                f'PersonSearchMetric: results_file {results_file} already '
                'exists; choose another name or set overwrite=True')
        self.dataset_type = settings.dataset_type
        self.data_root = data_root
        self.gallery_sizes: List[int] = settings.gallery_sizes
        self.cross_camera = settings.cross_camera
        self.score_thr = settings.score_thr
        self.results_file = results_file
        self.overwrite = overwrite
        self.subsets = settings.subsets
        self.subset_gallery_size = settings.subset_gallery_size
        self.cbgm = settings.cbgm
        self.cbgm_k1, self.cbgm_k2 = settings.cbgm_k1, settings.cbgm_k2
        self._protocols: Optional[list] = None
        self._subsets: Optional[list] = None

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep the detections of gallery images and the embedding of each
        query (as numpy, so that collecting them is cheap)."""
        for sample in data_samples:
            split = _get(sample, 'split')
            img_id = _get(sample, 'img_id')
            pred = _get(sample, 'pred_instances')
            if pred is None:
                raise PlainKeyError(
                    f'PersonSearchMetric: the output for image '
                    f'{img_id!r} has no pred_instances')
            for key in ('bboxes', 'embeddings'):
                if key not in pred:
                    raise PlainKeyError(
                        f'PersonSearchMetric: pred_instances of '
                        f'image {img_id!r} lack {key!r}')
            bboxes = _numpy(pred['bboxes']).reshape(-1, 4)
            embeds = _numpy(pred['embeddings'])
            if embeds.ndim != 2 or embeds.shape[0] != bboxes.shape[0]:
                raise ValueError(
                    f'PersonSearchMetric: image {img_id!r} has '
                    f'{bboxes.shape[0]} boxes but embeddings of shape '
                    f'{tuple(embeds.shape)}, expected ({bboxes.shape[0]}, D)')
            if split == 'gallery':
                if 'scores' not in pred:
                    raise PlainKeyError(
                        f'PersonSearchMetric: pred_instances of '
                        f'gallery image {img_id!r} lack "scores"')
                self.results.append(
                    dict(
                        split='gallery',
                        img_id=str(img_id),
                        bboxes=bboxes,
                        scores=_numpy(pred['scores']).reshape(-1),
                        embeddings=embeds))
            elif split == 'query':
                q_index = _get(sample, 'query_index')
                if q_index is None:
                    raise PlainKeyError(f'PersonSearchMetric: query image '
                                        f'{img_id!r} has no query_index')
                if bboxes.shape[0] != 1:
                    raise ValueError(
                        f'PersonSearchMetric: query {q_index} ({img_id}) '
                        f'has {bboxes.shape[0]} predicted instances, '
                        'expected exactly 1 (the query box)')
                self.results.append(
                    dict(
                        split='query',
                        query_index=int(q_index),
                        img_id=str(img_id),
                        bbox=bboxes[0],
                        embedding=embeds[0]))
            else:
                raise ValueError(f'PersonSearchMetric: image {img_id!r} has '
                                 f'split {split!r}, expected "gallery" or '
                                 '"query"')

    @staticmethod
    def assemble_results(results: List[dict]) -> dict:
        """The processed samples, as a results-format dict."""
        gallery: Dict[str, dict] = {}
        queries: Dict[int, dict] = {}
        for r in results:
            if r['split'] == 'gallery':
                if r['img_id'] in gallery:
                    raise ValueError(f'PersonSearchMetric: gallery image '
                                     f'{r["img_id"]!r} was processed twice')
                gallery[r['img_id']] = dict(
                    bboxes=r['bboxes'],
                    scores=r['scores'],
                    embeddings=r['embeddings'])
            else:
                if r['query_index'] in queries:
                    raise ValueError(f'PersonSearchMetric: query '
                                     f'{r["query_index"]} was processed '
                                     'twice')
                queries[r['query_index']] = dict(
                    img_id=r['img_id'],
                    bbox=r['bbox'],
                    embedding=r['embedding'])
        if set(queries) != set(range(len(queries))):
            missing = sorted(set(range(max(queries) + 1)) - set(queries))
            raise ValueError(
                f'PersonSearchMetric: query indices must be 0..n-1; got '
                f'{len(queries)} queries, missing e.g. {missing[:5]}')
        return dict(
            gallery=gallery, query=[queries[i] for i in range(len(queries))])

    def load_protocols(self) -> list:
        """The protocol(s), read once and kept for later evaluations."""
        if self._protocols is None:
            if self.dataset_type == 'cuhk':
                self._protocols = [
                    load_protocol('cuhk', self.data_root, s)
                    for s in self.gallery_sizes
                ]
            else:
                self._protocols = [load_protocol('prw', self.data_root)]
        return self._protocols

    def load_subsets(self) -> list:
        """The CUHK-SYSU query subsets (``QuerySubset``), read once."""
        if self._subsets is None:
            if not self.subsets:
                self._subsets = []
            else:
                from mmpsearch.datasets.cuhk_subsets import (load_cuhk_subsets,
                                                             resolve_subsets)
                names = resolve_subsets(self.subsets, self.data_root)
                self._subsets = load_cuhk_subsets(self.data_root, names,
                                                  self.load_protocols()[0],
                                                  self.subset_gallery_size)
        return self._subsets

    @property
    def subset(self) -> Optional[str]:
        """The ``"subset"`` of ``run_settings.metric_settings``: ``None``
        without query subsets; else it says that the unsuffixed keys are all
        queries and which keys are a subset's (as its ``camera`` does for
        ``cross_camera``)."""
        if not self.subsets:
            return None
        if self._subsets is not None:
            names = [s.name for s in self._subsets]
        else:
            from mmpsearch.datasets.cuhk_subsets import resolve_subsets
            names = resolve_subsets(self.subsets, self.data_root)
        if not names:
            return None
        keys = ', '.join(
            f'*{subset_suffix(n, self.subset_gallery_size)} keys: the {n} '
            'subset' for n in names)
        return f'all queries; {keys}'

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        search_results = self.assemble_results(results)
        if self.results_file is not None:
            to_save = search_results
            if self.results_meta is not None:
                to_save = dict(search_results, meta=dict(self.results_meta))
            save_search_results(to_save, self.results_file, self.overwrite)
            logger.info(f'person-search results saved to {self.results_file}')
        metrics = evaluate_person_search(
            search_results,
            self.load_protocols(),
            score_thr=self.score_thr,
            cross_camera=self.cross_camera,
            subsets=self.load_subsets(),
            cbgm=self.cbgm,
            cbgm_k1=self.cbgm_k1,
            cbgm_k2=self.cbgm_k2)
        if self.cbgm:
            logger.info(f'search re-ranked with CBGM (k1={self.cbgm_k1}, '
                        f'k2={self.cbgm_k2})')
        logger.info(
            self.format_table(metrics, self.gallery_sizes, self.cross_camera,
                              [subset_row(s) for s in self.load_subsets()]))
        return dict(metrics)

    @staticmethod
    def format_table(
        metrics: Dict[str, float],
        gallery_sizes: Sequence[int] = (),
        cross_camera: bool = False,
        subsets: Sequence[Tuple[str, str]] = ()
    ) -> str:
        """A plain-text table of the metrics, in percent (``subsets``: a
        row ``(label, key suffix)`` per CUHK-SYSU query subset, see
        :func:`subset_row`)."""
        rows = []
        if gallery_sizes:
            for i, s in enumerate(gallery_sizes):
                rows.append(
                    (f'gallery {s}', '' if i == 0 else gallery_size_suffix(s)))
        else:
            rows.append(('all frames', ''))
            if cross_camera:
                rows.append(('cross-camera', CROSS_CAMERA_SUFFIX))
        rows.extend(tuple(r) for r in subsets)
        width = max([14] + [len(name) + 1 for name, _ in rows])
        head = f'{"protocol":<{width}}' + ''.join(f'{k:>8}'
                                                  for k in SEARCH_KEYS)
        lines = ['person search', head]
        for name, suffix in rows:
            lines.append(f'{name:<{width}}' +
                         ''.join(f'{100 * metrics[k + suffix]:8.2f}'
                                 for k in SEARCH_KEYS))
        lines.append('detection ' + '  '.join(f'{k}={100 * metrics[k]:.2f}'
                                              for k in DETECTION_KEYS))
        return '\n'.join(lines)
