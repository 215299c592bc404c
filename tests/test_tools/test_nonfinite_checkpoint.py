# Copyright (c) mmpsearch contributors. All rights reserved.
"""A checkpoint with NaN or inf weights is refused where checkpoints are
fitted (``docs/en/refusals.md``), naming the first bad tensor: by
``init_searcher``, ``tools/test.py`` (before the test set runs) and
training's ``load_from`` / ``--resume``, instead of a searcher that
silently finds nothing."""

import pytest
import torch

from mmpsearch.apis import init_searcher
from mmpsearch.testing import ToyRegressor
from mmpsearch.utils.checkpoint import (NonFiniteCheckpointError,
                                        check_checkpoint_fits,
                                        check_state_dict_finite)
from .conftest import (ORACLE, make_oracle_scenes, oracle_cfg,
                       oracle_test_args, run_tool)


def test_check_names_the_first_bad_tensor():
    model = ToyRegressor()
    state = model.state_dict()
    check_checkpoint_fits(model, {'state_dict': state}, 'ok.pth')
    bad = {k: v.clone() for k, v in state.items()}
    bad['linear.weight'][0, :2] = float('nan')
    bad['linear.bias'][:] = float('inf')
    with pytest.raises(NonFiniteCheckpointError) as e:
        check_checkpoint_fits(model, {'state_dict': bad}, 'bad.pth')
    msg = str(e.value)
    assert 'checkpoint bad.pth holds non-finite weights' in msg
    # the first in the model's state-dict order, how many of its values
    assert "the first is 'linear.weight' (1, 4) with 2 of its 4" in msg
    assert "2 tensors in all: ['linear.weight', 'linear.bias']" in msg
    assert 'earlier checkpoint' in msg
    # a partial load is allowed on request; NaN weights are not
    with pytest.raises(NonFiniteCheckpointError):
        check_checkpoint_fits(
            model, {'state_dict': bad}, 'bad.pth', allow_partial=True)
    # integer tensors and keys that do not load are not checked
    check_state_dict_finite({'n': torch.tensor(3)}, 'n.pth')
    check_state_dict_finite({'x': torch.tensor([float('nan')])},
                            'x.pth',
                            keys=[])


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_init_searcher_refuses_nonfinite_weights(tmp_path, value):
    ckpt = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'dummy': torch.full((1, ), value)}}, ckpt)
    for strict in (True, False):
        with pytest.raises(
                NonFiniteCheckpointError,
                match=rf"{ckpt} holds non-finite weights: the "
                r"first is 'dummy' \(1,\) with 1 of its 1"):
            init_searcher(oracle_cfg(tmp_path), str(ckpt), strict=strict)


def test_test_py_refuses_nonfinite_weights_before_the_test(tmp_path):
    root, boxes_file = make_oracle_scenes(tmp_path)
    ckpt = tmp_path / 'nan.pth'
    torch.save({'state_dict': {
        'dummy': torch.full((1, ), float('nan'))
    }}, ckpt)
    out = tmp_path / 'results.pkl'
    proc = run_tool(
        ['tools/test.py', ORACLE,
         str(ckpt), '--out',
         str(out)] + oracle_test_args(root, boxes_file, tmp_path / 'work'),
        check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert f'checkpoint {ckpt} holds non-finite weights' in err
    assert "'dummy'" in err
    # before the test set ran: no metrics, no results file
    assert 'search/mAP' not in proc.stdout + proc.stderr
    assert not out.exists()


def test_train_refuses_nonfinite_load_from(tmp_path, toy_config):
    state = ToyRegressor(in_dim=4).state_dict()
    state['linear.weight'][0, 0] = float('inf')
    ckpt = tmp_path / 'inf.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    work = tmp_path / 'work'
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(work), '--cfg-options', f'load_from={ckpt}'
    ],
                    check=False)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    assert f'checkpoint {ckpt} holds non-finite weights' in proc.stderr
    assert "'linear.weight'" in proc.stderr
    assert not list(work.glob('*.pth'))
