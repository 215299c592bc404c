# Copyright (c) mmpsearch contributors. All rights reserved.
"""The settings of a person-search evaluation, checked once.

Which protocol is scored (CUHK-SYSU gallery sizes 50 to 4000 and its
occlusion / low-resolution query subsets; PRW with or without the
cross-camera restriction), at which detection score threshold, and whether
the search is re-ranked with CBGM (SeqNet, Li & Miao, AAAI 2021). The
combinations the protocols do not define (a gallery size for PRW, the
cross-camera variant for CUHK-SYSU, CBGM's k without CBGM) are refused here,
before any data is read, with an error that names the option.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

from mmpsearch.datasets.cuhk_sysu import CUHK_GALLERY_SIZES
from mmpsearch.utils.thresholds import check_unit_interval
from .cbgm import resolve_cbgm_k


@dataclass(frozen=True)
class ProtocolSettings:
    """What :func:`check_protocol_settings` returns.

    Attributes:
        dataset_type (str): ``'cuhk'`` or ``'prw'``.
        gallery_sizes (list[int]): CUHK-SYSU gallery sizes, the first one
            giving the unsuffixed keys; empty for PRW.
        cross_camera (bool): PRW: also the cross-camera protocol.
        score_thr (float): Score threshold of gallery detections.
        subsets (str | list[str]): CUHK-SYSU query subsets, or ``'auto'``
            (those whose files exist, resolved when they are loaded).
        subset_gallery_size (int, optional): ``None``: the gallery lists of
            the subset file; ``N``: the ``TestG{N}`` lists.
        cbgm (bool): Re-rank the search with CBGM.
        cbgm_k1, cbgm_k2 (int, optional): CBGM's k1 / k2 (the dataset's
            defaults filled in) with ``cbgm``; else ``None``.
    """
    dataset_type: str
    gallery_sizes: List[int]
    cross_camera: bool
    score_thr: float
    subsets: Union[str, List[str]]
    subset_gallery_size: Optional[int]
    cbgm: bool
    cbgm_k1: Optional[int]
    cbgm_k2: Optional[int]


def check_cuhk_gallery_sizes(sizes: Sequence[int], owner: str) -> None:
    """A ``ValueError`` starting with ``owner`` unless every size is one of
    CUHK-SYSU's gallery sizes and none repeats."""
    for s in sizes:
        if s not in CUHK_GALLERY_SIZES:
            raise ValueError(f'{owner}: unknown CUHK-SYSU gallery size {s!r}, '
                             f'expected one of {CUHK_GALLERY_SIZES}')
    if len(set(sizes)) != len(sizes):
        raise ValueError(f'{owner}: gallery sizes {list(sizes)} repeat')


def check_protocol_settings(
        dataset_type: str,
        data_root: str,
        gallery_size: Union[int, Sequence[int]] = 100,
        cross_camera: bool = False,
        score_thr: float = 0.5,
        subsets: Union[str, Sequence[str], None] = (),
        subset_gallery_size: Optional[int] = None,
        cbgm: bool = False,
        cbgm_k1: Optional[int] = None,
        cbgm_k2: Optional[int] = None,
        owner: str = 'PersonSearchMetric') -> ProtocolSettings:
    """Check the evaluation settings of ``PersonSearchMetric`` (whose
    arguments these are, see its docstring) and return them resolved.

    Named subsets are checked against the files under ``data_root`` (they
    must exist); ``'auto'`` is resolved when the subsets are loaded.
    ``owner`` starts every message.

    Raises:
        ValueError: For a setting the dataset's protocol does not define,
            naming the option and what was expected.
    """
    if dataset_type not in ('cuhk', 'prw'):
        raise ValueError(f'{owner}: dataset_type {dataset_type!r}, expected '
                         '"cuhk" or "prw"')
    sizes = [gallery_size] if isinstance(gallery_size, int) \
        else list(gallery_size)
    if dataset_type == 'cuhk':
        if not sizes:
            raise ValueError(f'{owner}: gallery_size is empty')
        check_cuhk_gallery_sizes(sizes, owner)
        if cross_camera:
            raise ValueError(f'{owner}: cross_camera applies to PRW only')
    elif sizes != [100]:
        raise ValueError(f'{owner}: gallery_size applies to CUHK-SYSU only, '
                         f'got {gallery_size!r} for PRW')
    subsets = [] if subsets is None else subsets
    if not isinstance(subsets, str):
        subsets = list(subsets)
    if subsets and dataset_type != 'cuhk':
        raise ValueError(f'{owner}: subsets apply to CUHK-SYSU only, got '
                         f'{subsets!r} for PRW')
    if subsets != 'auto':
        from mmpsearch.datasets.cuhk_subsets import resolve_subsets
        try:
            resolve_subsets(subsets, data_root)
        except ValueError as e:
            raise ValueError(f'{owner}: subsets: {e}') from None
    if subset_gallery_size is not None and \
            subset_gallery_size not in CUHK_GALLERY_SIZES:
        raise ValueError(
            f'{owner}: unknown subset_gallery_size {subset_gallery_size!r}, '
            f'expected None or one of {CUHK_GALLERY_SIZES}')
    if cbgm:
        cbgm_k1, cbgm_k2 = resolve_cbgm_k(dataset_type, cbgm_k1, cbgm_k2,
                                          f'{owner}: ')
    elif cbgm_k1 is not None or cbgm_k2 is not None:
        raise ValueError(f'{owner}: cbgm_k1 / cbgm_k2 are given but cbgm is '
                         'False')
    # NaN, '0.5' or True are refused too, not only 5
    score_thr = check_unit_interval(score_thr, f'{owner}: score_thr')
    return ProtocolSettings(
        dataset_type=dataset_type,
        gallery_sizes=sizes if dataset_type == 'cuhk' else [],
        cross_camera=cross_camera,
        score_thr=score_thr,
        subsets=subsets,
        subset_gallery_size=subset_gallery_size,
        cbgm=bool(cbgm),
        cbgm_k1=cbgm_k1,
        cbgm_k2=cbgm_k2)
