# Copyright (c) mmpsearch contributors. All rights reserved.
"""What the tools share after parsing (:mod:`mmpsearch.utils.cli`)."""
import json
from argparse import Namespace

import pytest

from mmpsearch.utils.cli import (exit_on_refusal, refuse_existing_json,
                                 write_json)


def test_refuse_existing_json(tmp_path):
    path = tmp_path / 'figures.json'
    refuse_existing_json(Namespace(json=None, force=False))  # no --json
    refuse_existing_json(Namespace(json=str(path), force=False))  # new
    path.write_text('{"kept": 1}')
    with pytest.raises(FileExistsError, match='--json .*figures.json'):
        refuse_existing_json(Namespace(json=str(path), force=False))
    refuse_existing_json(Namespace(json=str(path), force=True))
    assert json.loads(path.read_text()) == {'kept': 1}  # not touched


def test_a_tool_exits_with_the_refusal(tmp_path):
    path = tmp_path / 'figures.json'
    path.write_text('{}')
    with pytest.raises(SystemExit) as e:
        with exit_on_refusal():
            refuse_existing_json(Namespace(json=str(path), force=False))
    assert 'figures.json' in str(e.value.code)


def test_write_json_new_or_forced(tmp_path, capsys):
    path = str(tmp_path / 'figures.json')
    write_json({'mAP': 0.5}, path)
    assert 'written to' in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        write_json({'mAP': 0.6}, path)
    write_json({'mAP': 0.7}, path, force=True)
    assert json.loads(open(path).read()) == {'mAP': 0.7}
