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

The package: :mod:`.render` draws the scenes, :mod:`.cuhk_writer` and
:mod:`.prw_writer` write them in the two releases' layouts, whose folder,
file and variable names they take from the readers.
"""
from typing import Tuple

from ..cuhk_sysu import CUHK_GALLERY_SIZES
from .captions import (CAPTION_WORDS, SCENES_FILE, describe_look, grey_name,
                       scene_caption)
from .cuhk_writer import (LOW_RES_MAX_HEIGHT, OCCLUSION_MIN_SHARE, make_cuhk,
                          occlusion_share)
from .prw_writer import make_prw
from .render import (HAIRS, PALETTE, PATTERNS, SHOES, SKINS, Color, PersonLook,
                     identity_looks, passerby_look, render_background,
                     render_person, render_scene)


def make_synthetic(fmt: str,
                   out_dir: str,
                   num_images: int = 400,
                   num_ids: int = 50,
                   seed: int = 0,
                   image_size: Tuple[int, int] = (320, 240),
                   describe: bool = False) -> dict:
    """Render a synthetic person-search dataset in a released format.

    Args:
        fmt (str): ``'cuhk'`` (CUHK-SYSU layout: ``Image/SSM``,
            ``annotation/{Images,pool,Person}.mat``,
            ``annotation/test/train_test/{Train,TestG50,TestG100,...}.mat``,
            ``annotation/test/subset/{Occlusion,Resolution}.mat`` with the
            queries that really are occluded / small, see
            ``cuhk_writer.write_cuhk_subsets``)
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
        describe (bool): CUHK only: also write ``scenes.json`` at the root,
            what the renderer drew in each image (the clothing colour names
            of every person, the background's colours, the boxes), from
            which :func:`.captions.scene_caption` writes captions. Every
            other file is the same as without it. Defaults to False.

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
    if fmt == 'prw':
        if describe:
            raise ValueError('describe=True is written for the CUHK layout '
                             "only; use fmt='cuhk'")
        return make_prw(out_dir, int(num_images), int(num_ids), int(seed),
                        (int(W), int(H)))
    return make_cuhk(
        out_dir,
        int(num_images),
        int(num_ids),
        int(seed), (int(W), int(H)),
        describe=bool(describe))


__all__ = [
    'make_synthetic', 'render_person', 'render_scene', 'render_background',
    'identity_looks', 'passerby_look', 'PersonLook', 'Color', 'PALETTE',
    'PATTERNS', 'SKINS', 'HAIRS', 'SHOES', 'OCCLUSION_MIN_SHARE',
    'LOW_RES_MAX_HEIGHT', 'occlusion_share', 'make_cuhk', 'make_prw',
    'CUHK_GALLERY_SIZES', 'CAPTION_WORDS', 'SCENES_FILE', 'describe_look',
    'grey_name', 'scene_caption'
]
