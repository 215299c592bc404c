# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/identity_probe.py: a linear identity probe of the
frozen DiffPS Stable Diffusion features on the ground-truth boxes."""
import json

import numpy as np
import pytest
import torch

from mmpsearch.models.backbones.sd_loader import load_vae
from ..conftest import load_tool

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def probe_tool():
    return load_tool('tools/analysis_tools/identity_probe.py',
                     'identity_probe_tool')


def _retrieval_map(query: np.ndarray, q_ids, gallery: np.ndarray, g_ids):
    """Mean average precision of cosine ranking (rows are unit vectors)."""
    aps = []
    for e, qid in zip(query, q_ids):
        order = np.argsort(-(gallery @ e), kind='stable')
        hits = np.asarray(g_ids)[order] == qid
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return float(np.mean(aps))


def _hand_made(rng, ids, noise=5.0):
    """Identity k on a circle in dims 0-1 (radius 1, angle 2 pi k / 6,
    within-identity std 0.05); dims 2-7 noise of std ``noise``."""
    ids = np.asarray(ids)
    angle = 2 * np.pi * ids / 6
    x = np.zeros((len(ids), 8))
    x[:, 0], x[:, 1] = np.cos(angle), np.sin(angle)
    x[:, :2] += 0.05 * rng.standard_normal((len(ids), 2))
    x[:, 2:] = noise * rng.standard_normal((len(ids), 6))
    return x


def test_whitening_finds_identity_under_larger_noise(probe_tool):
    rng = np.random.default_rng(0)
    train_ids = np.repeat(np.arange(6), 20)
    probe = probe_tool.LinearProbe(max_dim=128).fit(
        _hand_made(rng, train_ids), train_ids)
    assert probe.dim == 8  # at most the input's dimensions
    q_ids, g_ids = np.arange(6), np.repeat(np.arange(6), 5)
    query, gallery = _hand_made(rng, q_ids), _hand_made(rng, g_ids)

    lda = [probe.embed(x, 'lda') for x in (query, gallery)]
    pca = [probe.embed(x, 'pca') for x in (query, gallery)]
    for e in lda + pca:
        assert e.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, rtol=1e-5)
    # whitened: the identity dims dominate, every true match ranks first
    assert _retrieval_map(lda[0], q_ids, lda[1], g_ids) == pytest.approx(1.0)
    # PCA alone ranks by the noise: near chance (1/6)
    assert _retrieval_map(pca[0], q_ids, pca[1], g_ids) < 0.6
    # a PCA of fewer dimensions keeps only noise: the whitening cannot help
    small = probe_tool.LinearProbe(max_dim=4).fit(
        _hand_made(rng, train_ids), train_ids)
    emb = [small.embed(x, 'lda') for x in (query, gallery)]
    assert _retrieval_map(emb[0], q_ids, emb[1], g_ids) < 0.6
    with pytest.raises(ValueError, match='mode'):
        probe.embed(query, 'raw')


def test_pool_boxes_rows_top_to_bottom(probe_tool):
    """The 4 x 2 grid: rows from the top of the box down, columns left to
    right, on a map at 1/8 of the (padded) image."""
    feat = torch.zeros(1, 1, 8, 8)
    feat[0, 0] = torch.arange(8).float()[:, None]  # value = map row
    row = probe_tool.pool_boxes(feat, np.array([[0, 0, 32, 64]]), 64)
    assert row.shape == (1, 8)
    cells = row.reshape(4, 2)
    assert (np.diff(cells[:, 0]) > 0).all()  # top to bottom
    np.testing.assert_allclose(cells[:, 0], cells[:, 1])
    # a permuted (non-contiguous) map pools as its contiguous copy
    perm = torch.randn(1, 8, 8, 3).permute(0, 3, 1, 2)
    np.testing.assert_allclose(
        probe_tool.pool_boxes(perm, np.array([[4, 8, 40, 60]]), 64),
        probe_tool.pool_boxes(perm.contiguous(), np.array([[4, 8, 40, 60]]),
                              64))


def test_image_maps_are_the_backbone_outputs(probe_tool, tiny_sd_dir):
    from mmpsearch.models.backbones.stable_diffusion import \
        StableDiffusionBackbone
    backbone = StableDiffusionBackbone(tiny_sd_dir).eval()
    img = torch.rand(1, 3, 64, 128) * 2 - 1
    maps = probe_tool.image_maps(backbone, load_vae(tiny_sd_dir), img)
    with torch.no_grad():
        out = backbone(img)
    torch.testing.assert_close(maps['det'], out['det_feat'])
    for li, level in enumerate(out['reid_feats']):
        for mi, m in enumerate(level):
            torch.testing.assert_close(maps[f'T{li + 1}_{mi}'], m)
    assert maps['rgb'] is img or torch.equal(maps['rgb'], img)
    assert maps['latent'].shape == (1, 4, 8, 16)
    # decoded to an image (the backbone's own VAE has no decoder)
    assert maps['recon'].shape == img.shape
    assert maps['recon'].abs().max() <= 1
    groups = probe_tool.source_groups([len(v) for v in out['reid_feats']])
    assert set(groups) == {
        'rgb', 'recon', 'latent', 'det', 'T1', 'T2', 'T3', 'reid_all'
    }
    assert set(groups['reid_all']) | {'rgb', 'recon', 'latent', 'det'} == \
        set(maps)


def test_probe_tool_on_tiny_synthetic_data(probe_tool, tiny_sd_dir, tiny_cuhk,
                                           tmp_path, capsys):
    out = tmp_path / 'new' / 'probe.json'  # its folder is made
    report = probe_tool.main([
        tiny_cuhk, '--sd-path', tiny_sd_dir, '--out',
        str(out), '--num-train', '60', '--threads', '1', '--timestep', '5'
    ])
    with open(out) as f:
        written = json.load(f)
    assert written['results'] == report['results']
    results = written['results']
    assert list(results) == [
        'rgb', 'recon', 'latent', 'det', 'T1', 'T2', 'T3', 'reid_all'
    ]
    for source, r in results.items():
        for mode in ('pca', 'lda'):
            for key in ('mAP', 'top1'):
                assert 0 <= r[mode][key] <= 100, (source, mode, key)
    assert written['train_images'] == 60
    assert written['queries'] == 8 and written['gallery_size'] == 100
    # the default config's backbone, with the command line's changes
    backbone = written['backbone']
    assert backbone['sd_path'] == tiny_sd_dir and backbone['timestep'] == 5
    assert backbone['type'].endswith('StableDiffusionBackbone')
    assert backbone['reid_layers'][0] == ['T[1][2].attn1.to_q']
    # identities differ by clothing colour: raw colours find them (chance:
    # a few % on 100 gallery images)
    assert results['rgb']['lda']['mAP'] > 40
    assert results['rgb']['pca']['mAP'] > 40
    printed = capsys.readouterr().out
    assert 'reid_all' in printed and 'written to' in printed


def test_probe_tool_refuses_an_existing_out(probe_tool, tiny_sd_dir, tiny_cuhk,
                                            tmp_path):
    out = tmp_path / 'probe.json'
    out.write_text('earlier')
    with pytest.raises(SystemExit, match='--force'):
        probe_tool.main(
            [tiny_cuhk, '--sd-path', tiny_sd_dir, '--out',
             str(out)])
    assert out.read_text() == 'earlier'
    # refused before any work: a missing SD folder is not reached
    with pytest.raises(SystemExit, match='--force'):
        probe_tool.main([
            tiny_cuhk, '--sd-path',
            str(tmp_path / 'missing'), '--out',
            str(out)
        ])
    assert out.read_text() == 'earlier'
