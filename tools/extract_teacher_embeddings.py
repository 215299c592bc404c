# Copyright (c) mmpsearch contributors. All rights reserved.
"""Write the ReID teacher's embeddings e_0 of every annotated box.

PSDiff trains its denoiser towards ``e_0 = Teacher(S, b_0)`` (PSDiff eq. 11),
for labeled and unlabeled persons alike. This tool runs a trained teacher
(``configs/teacher/*.py``) on the crop of every box of one split and writes
one L2-normalised embedding per box, in the order of the data infos'
``instances``, with :func:`mmpsearch.datasets.teacher_cache.
save_teacher_embeddings`::

    python tools/extract_teacher_embeddings.py \\
        configs/teacher/teacher_r50_cuhk.py work_dirs/teacher/epoch_60.pth \\
        --out data/CUHK-SYSU/teacher_r50_train.npz

The crops are made by the config's ``test_dataloader`` pipeline; the split
is chosen with ``--split``. The work is done by
:func:`mmpsearch.apis.write_teacher_embeddings`; this tool parses and checks
the arguments.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

# Make `python tools/extract_teacher_embeddings.py` work from a checkout
# without `pip install -e .`.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmpsearch.utils.cli_args import add_cfg_options_arg  # noqa: E402
from mmpsearch.utils.cli_args import add_force_arg  # noqa: E402
from mmpsearch.utils.cli_args import add_model_args  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Extract PSDiff teacher embeddings e_0 for every '
        'annotated box of a split')
    add_model_args(parser, 'teacher config (configs/teacher/)',
                   'trained teacher checkpoint')
    parser.add_argument(
        '--out', required=True, help='output file, must end with .npz')
    parser.add_argument(
        '--split',
        default='train',
        help='split of the person-search dataset to embed (default: train)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument(
        '--device',
        choices=['cpu', 'cuda'],
        default=None,
        help='default: cuda when available, else cpu')
    add_force_arg(parser, help='overwrite --out when it exists')
    add_cfg_options_arg(parser, help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    # after parsing: --help answers without the slow imports (torch, mmdet)
    import torch

    from mmpsearch.apis import write_teacher_embeddings
    from mmpsearch.utils import safe_checkpoint_loading
    from mmpsearch.utils.cli import exit_on_refusal
    from mmpsearch.utils.overwrite import refuse_existing_file
    if not args.out.endswith('.npz'):
        raise SystemExit(f'--out {args.out}: the file name must end with '
                         '.npz (numpy would add the suffix otherwise)')
    with exit_on_refusal():
        refuse_existing_file(args.out, '--out', args.force)
    if args.batch_size < 1:
        raise SystemExit(f'--batch-size must be >= 1, got {args.batch_size}')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda was asked but CUDA is not available')

    with safe_checkpoint_loading():
        summary = write_teacher_embeddings(
            args.config,
            args.checkpoint,
            args.out,
            split=args.split,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=device,
            cfg_options=args.cfg_options,
            overwrite=args.force)
    print(f'wrote {summary["num_boxes"]} embeddings (dim {summary["dim"]}) '
          f'of {summary["num_images"]} images of split {args.split!r} to '
          f'{args.out}')
    return args.out


if __name__ == '__main__':
    main()
