# Copyright (c) mmpsearch contributors. All rights reserved.
"""``load_results_and_protocol``: what the analysis tools read first."""
import numpy as np
import pytest

from mmpsearch.evaluation.metrics.person_search_metric import (
    load_protocol, load_results_and_protocol)
from mmpsearch.evaluation.results_io import save_search_results
from mmpsearch.testing.released_trees import write_cuhk, write_prw


def _save_results(protocol, path):
    """Every annotated person detected, a random 4-d embedding each."""
    rng = np.random.default_rng(0)
    gallery = {
        img_id:
        dict(
            bboxes=g.boxes.astype(np.float32),
            scores=np.ones(len(g.boxes), np.float32),
            embeddings=rng.standard_normal(
                (len(g.boxes), 4)).astype(np.float32))
        for img_id, g in protocol.gallery.items()
    }
    query = [
        dict(
            img_id=q.img_id,
            bbox=q.box.astype(np.float32),
            embedding=rng.standard_normal(4).astype(np.float32))
        for q in protocol.queries
    ]
    save_search_results(dict(gallery=gallery, query=query), str(path))


@pytest.mark.parametrize('dataset', ['cuhk', 'prw'])
def test_reads_both(dataset, tmp_path):
    root = str(tmp_path / dataset)
    if dataset == 'cuhk':
        write_cuhk(root)
    else:
        write_prw(root)
    path = tmp_path / 'results.pkl'
    # results made for the protocol the tools will ask for
    protocol = load_protocol(dataset, root, 50 if dataset == 'cuhk' else None)
    _save_results(protocol, path)
    results, loaded = load_results_and_protocol(str(path), dataset, root, 50)
    # CUHK-SYSU at the size asked for; PRW has one gallery, whatever it is
    assert loaded.gallery_size == (50 if dataset == 'cuhk' else None)
    assert len(results['query']) == len(loaded.queries) > 0
    assert set(results['gallery']) <= set(loaded.gallery)


@pytest.mark.parametrize('make', ['missing', 'folder'])
def test_results_file_is_checked_before_the_dataset(make, tmp_path):
    path = tmp_path / 'results.pkl'
    if make == 'folder':
        path.mkdir()
    # the dataset root does not exist either: the results file is named
    with pytest.raises(FileNotFoundError, match='results.pkl'):
        load_results_and_protocol(
            str(path), 'cuhk', str(tmp_path / 'no_dataset'))
