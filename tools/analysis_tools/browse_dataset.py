# Copyright (c) mmpsearch contributors. All rights reserved.
"""Draw the annotated boxes and person ids of a few samples of a dataset
config to PNG files, to check that a dataset is read correctly.

The boxes are the dataset's data infos (original image pixels, before any
pipeline transform), drawn on the original image: green for labeled persons
with their id, red for unlabeled persons (id -1).

Example::

    python tools/analysis_tools/browse_dataset.py \
        configs/_base_/datasets/synthetic_cuhk.py \
        --output-dir work_dirs/browse --num 8 --split gallery
"""
import argparse
import os
import os.path as osp
from typing import Any

from mmengine.config import Config

from mmpsearch.utils.cli_args import add_cfg_options_arg, add_force_arg

LABELED = (0, 200, 0)
UNLABELED = (220, 20, 20)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw boxes and person ids of dataset samples to PNGs.')
    parser.add_argument(
        'config',
        help='a config with train_dataloader / '
        'test_dataloader (e.g. configs/_base_/datasets/...)')
    parser.add_argument(
        '--output-dir',
        required=True,
        help='folder for the PNG files (a new or empty one)')
    add_force_arg(
        parser,
        help='write into a non-empty --output-dir, '
        'overwriting PNG files of the same names')
    parser.add_argument(
        '--num', type=int, default=8, help='number of samples to draw')
    parser.add_argument(
        '--split', default='train', choices=['train', 'gallery', 'query'])
    parser.add_argument(
        '--data-root', help="override the chosen dataset's data_root")
    add_cfg_options_arg(
        parser,
        help='override config settings, e.g. '
        'train_dataloader.dataset.data_root=data/x')
    return parser.parse_args()


# --help and a usage error answer before the slow imports below (torch:
# seconds); main() parses again.
if __name__ == '__main__':
    parse_args()

import mmcv  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.registry import build_from_cfg  # noqa: E402
from mmengine.visualization import Visualizer  # noqa: E402

from mmpsearch.registry import DATASETS  # noqa: E402
from mmpsearch.utils.cli import exit_on_refusal  # noqa: E402
from mmpsearch.utils.overwrite import refuse_nonempty_dir  # noqa: E402
from mmpsearch.utils.setup_env import register_all_modules  # noqa: E402


def dataset_cfg_for_split(cfg: Config, split: str) -> Any:
    """The dataset config of ``split``: train_dataloader's dataset for
    'train'; the member of test_dataloader's ConcatDataset for 'gallery' /
    'query'."""
    if split == 'train':
        return cfg.train_dataloader.dataset
    ds = cfg.test_dataloader.dataset
    members = ds.get('datasets', [ds])
    for member in members:
        if member.get('split') == split:
            return member
    raise KeyError(f'{cfg.filename}: test_dataloader.dataset has no dataset '
                   f"with split='{split}' (found "
                   f"{[m.get('split') for m in members]})")


def draw_sample(info: dict, out_file: str) -> None:
    """Draw the instances of one data info on its image."""
    img = mmcv.imread(info['img_path'], channel_order='rgb')
    vis = Visualizer(image=img)
    instances = info.get('instances', [])
    if instances:
        boxes = np.array([i['bbox'] for i in instances], dtype=np.float32)
        ids = [int(i['person_id']) for i in instances]
        colors = [LABELED if pid >= 0 else UNLABELED for pid in ids]
        vis.draw_bboxes(boxes, edge_colors=colors, line_widths=2)
        positions = np.stack([boxes[:, 0] + 2, boxes[:, 1] + 2], axis=1)
        vis.draw_texts([str(pid) for pid in ids],
                       positions,
                       colors='white',
                       font_sizes=9,
                       bboxes=[
                           dict(
                               facecolor=c_to_hex(c),
                               alpha=0.8,
                               pad=0.5,
                               edgecolor='none') for c in colors
                       ])
    mmcv.imwrite(vis.get_image()[..., ::-1], out_file)


def c_to_hex(color) -> str:
    return '#%02x%02x%02x' % tuple(color)


def main() -> None:
    args = parse_args()
    # before any work: PNGs of the same names would be overwritten
    with exit_on_refusal():
        refuse_nonempty_dir(args.output_dir, '--output-dir', args.force)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    register_all_modules()
    ds_cfg = dataset_cfg_for_split(cfg, args.split).copy()
    ds_cfg['pipeline'] = []  # the raw annotations are drawn
    if args.data_root:
        ds_cfg['data_root'] = args.data_root
    dataset = build_from_cfg(ds_cfg, DATASETS)
    os.makedirs(args.output_dir, exist_ok=True)
    num = min(args.num, len(dataset))
    for idx in range(num):
        info = dataset.get_data_info(idx)
        name = osp.splitext(info['img_id'])[0]
        out_file = osp.join(args.output_dir,
                            f'{args.split}_{idx:04d}_{name}.png')
        draw_sample(info, out_file)
    print(f'wrote {num} images of the {args.split} split to '
          f'{args.output_dir}')


if __name__ == '__main__':
    main()
