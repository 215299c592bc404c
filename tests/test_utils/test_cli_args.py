# Copyright (c) mmpsearch contributors. All rights reserved.
"""The options the tools share (:mod:`mmpsearch.utils.cli_args`)."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from mmpsearch.utils.cli_args import (add_cfg_options_arg, add_force_arg,
                                      add_json_args, add_launcher_arg,
                                      add_model_args, add_results_args,
                                      add_score_thr_arg, add_shape_arg,
                                      add_steps_arg, add_timestep_arg,
                                      score_threshold)

REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    # exit_on_error=False: a usage error raises instead of exiting
    return argparse.ArgumentParser(prog='tool', exit_on_error=False)


def _refuses(parser: argparse.ArgumentParser, argv: list) -> None:
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(argv)


@pytest.mark.parametrize('flag', ['--force', '--overwrite'])
def test_force_arg(flag):
    parser = _parser()
    add_force_arg(parser, help='replace it', flag=flag)
    dest = flag[2:]
    assert getattr(parser.parse_args([]), dest) is False
    assert getattr(parser.parse_args([flag]), dest) is True
    _refuses(parser, [flag, 'yes'])  # a switch takes no value
    assert 'replace it' in parser.format_help()


def test_force_arg_is_force_by_default():
    parser = _parser()
    add_force_arg(parser)
    assert parser.parse_args(['--force']).force is True
    _refuses(parser, ['--overwrite'])


def test_model_args():
    parser = _parser()
    add_model_args(parser, 'the config', 'the weights')
    args = parser.parse_args(['a.py', 'b.pth'])
    assert (args.config, args.checkpoint) == ('a.py', 'b.pth')
    _refuses(parser, ['a.py'])  # both required
    text = parser.format_help()
    assert 'the config' in text and 'the weights' in text
    assert text.index('config') < text.index('checkpoint')


def test_json_args():
    parser = _parser()
    add_json_args(parser)
    args = parser.parse_args([])
    assert (args.json, args.force) == (None, False)
    args = parser.parse_args(['--json', 'out.json', '--force'])
    assert (args.json, args.force) == ('out.json', True)
    _refuses(parser, ['--json'])  # a file name
    text = parser.format_help()
    assert 'also write the figures to this (new) JSON file' in text
    assert 'overwrite an existing --json file' in text
    parser = _parser()
    add_json_args(parser, help='the metrics')
    assert 'the metrics' in parser.format_help()


def test_cfg_options_arg():
    parser = _parser()
    add_cfg_options_arg(parser, help='overrides')
    assert parser.parse_args([]).cfg_options is None
    args = parser.parse_args(
        ['--cfg-options', 'model.a=1', 'model.b=[1,2]', 'c=x'])
    assert args.cfg_options == {'model.a': 1, 'model.b': [1, 2], 'c': 'x'}
    _refuses(parser, ['--cfg-options'])  # at least one KEY=VALUE


def test_cfg_options_arg_as_strings():
    # the KEY=VALUE strings as given, for a tool that records them
    parser = _parser()
    add_cfg_options_arg(parser, help='overrides', as_strings=True)
    assert parser.parse_args([]).cfg_options == []
    args = parser.parse_args(['--cfg-options', 'model.a=1', 'b=[1,2]'])
    assert args.cfg_options == ['model.a=1', 'b=[1,2]']
    assert 'KEY=VALUE' in parser.format_help()


def test_steps_arg():
    parser = _parser()
    add_steps_arg(parser, help='step counts')
    assert parser.parse_args([]).steps == [1, 2, 4, 8]
    assert parser.parse_args(['--steps', '3']).steps == [3]
    _refuses(parser, ['--steps', 'two'])
    _refuses(parser, ['--steps'])


def test_shape_arg():
    parser = _parser()
    add_shape_arg(parser)
    assert parser.parse_args([]).shape == [800, 1333]
    assert parser.parse_args(['--shape', '240', '320']).shape == [240, 320]
    _refuses(parser, ['--shape', '240'])  # H and W
    _refuses(parser, ['--shape', '240', 'wide'])
    assert '--shape H W' in parser.format_help()


def test_launcher_arg():
    parser = _parser()
    add_launcher_arg(parser)
    assert parser.parse_args([]).launcher == 'none'
    assert parser.parse_args(['--launcher', 'pytorch']).launcher == 'pytorch'
    _refuses(parser, ['--launcher', 'torchrun'])
    assert 'job launcher' in parser.format_help()


def test_results_args():
    parser = _parser()
    add_results_args(parser, data_root_help='the dataset root')
    args = parser.parse_args(
        ['r.pkl', '--dataset', 'prw', '--data-root', 'data/PRW'])
    assert (args.results, args.dataset, args.data_root) == ('r.pkl', 'prw',
                                                            'data/PRW')
    _refuses(parser, ['r.pkl', '--dataset', 'market', '--data-root', 'd'])
    _refuses(parser, ['r.pkl', '--data-root', 'd'])  # --dataset required
    _refuses(parser, ['r.pkl', '--dataset', 'cuhk'])  # --data-root required
    _refuses(parser, ['--dataset', 'cuhk', '--data-root', 'd'])
    text = parser.format_help()
    assert 'results.pkl of tools/test.py' in text
    assert 'the dataset root' in text


def test_timestep_arg():
    parser = _parser()
    add_timestep_arg(parser, note='; a note')
    assert parser.parse_args([]).timestep == 0
    assert parser.parse_args(['--timestep', '200']).timestep == 200
    _refuses(parser, ['--timestep', '0.5'])
    assert 'a note' in ' '.join(parser.format_help().split())
    parser = _parser()
    add_timestep_arg(parser, default=None)  # the config's
    assert parser.parse_args([]).timestep is None
    assert "default: the config's" in ' '.join(parser.format_help().split())


@pytest.mark.parametrize('flag', ['--score-thr', '--thr'])
def test_score_thr_arg(flag):
    parser = _parser()
    add_score_thr_arg(parser, flag, help='keep detections above')
    dest = flag[2:].replace('-', '_')
    assert getattr(parser.parse_args([]), dest) == 0.5
    assert getattr(parser.parse_args([flag, '0']), dest) == 0.0
    assert getattr(parser.parse_args([flag, '1']), dest) == 1.0
    for bad in ('nan', '5', '-0.1', 'inf', 'half'):
        _refuses(parser, [flag, bad])
    assert 'keep detections above' in parser.format_help()


def test_score_threshold_message():
    with pytest.raises(argparse.ArgumentTypeError) as e:
        score_threshold('nan')
    assert str(e.value) == "must be a number in [0, 1], got 'nan'"
    assert score_threshold('0.25') == 0.25


@pytest.mark.parametrize('module', ['mmpsearch', 'mmpsearch.utils.cli_args'])
def test_import_is_light(module):
    # the tools import this module before they parse their arguments:
    # --help must not wait for torch (tests/test_tools/test_help_is_light.py)
    code = (f'import sys, {module}\n'
            "print(sorted(m for m in ('torch', 'mmcv', 'mmdet') "
            'if m in sys.modules))')
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['[]'], proc.stdout


def test_version_check_refuses_out_of_range():
    # read from the installed metadata, without importing the packages
    import mmpsearch
    mmpsearch._check('mmcv', '2.1.0', '2.1.0', '2.2.0')  # in range
    for found in ('2.0.1', '2.2.0'):
        with pytest.raises(
                ImportError, match=r'mmcv==.* needs mmcv>=2.1.0, <2.2.0'):
            mmpsearch._check('mmcv', found, '2.1.0', '2.2.0')
    assert mmpsearch._installed('mmdet') == mmpsearch.metadata.version('mmdet')
    with pytest.raises(
            ImportError, match='no-such-dist is not installed.*'
            'make install'):
        mmpsearch._installed('no-such-dist')
