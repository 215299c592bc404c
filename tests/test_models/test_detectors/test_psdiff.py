# Copyright (c) mmpsearch contributors. All rights reserved.
"""PSDiff (detector + PSDiffHead) end to end on a tiny configuration."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.backbones import ResNet
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.necks import FPN
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmpsearch.datasets.transforms import DualNoiseGenerator
from mmpsearch.models.detectors import PSDiff
from mmpsearch.models.heads import CDLHead, PSDiffHead
from mmpsearch.models.roi_extractors import GatherRoIExtractor
from mmpsearch.registry import MODELS
from mmpsearch.testing import unscaled_metainfo
from mmpsearch.utils import register_all_modules
from ...conftest import load_tool
from ..conftest import roi_align_extractor

C, D, N = 32, 16, 16
H, W = 64, 96
REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _cfg(**test_cfg):
    cfg = dict(
        type=PSDiff,
        data_preprocessor=dict(
            type=DetDataPreprocessor,
            mean=[0, 0, 0],
            std=[255, 255, 255],
            pad_size_divisor=32),
        backbone=dict(
            type=ResNet,
            depth=18,
            base_channels=8,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            init_cfg=None),
        neck=dict(
            type=FPN, in_channels=[8, 16, 32, 64], out_channels=C, num_outs=4),
        bbox_head=dict(
            type=PSDiffHead,
            diffusion=dict(num_proposals=N, embed_dims=D),
            denoiser=dict(
                type=CDLHead,
                in_channels=C,
                roi_extractor=roi_align_extractor(GatherRoIExtractor, C,
                                                  [4, 8, 16, 32]),
                num_heads=8,
                feedforward_channels=64,
                dynamic_conv=dict(feat_channels=8, param_rank=8))),
        test_cfg=dict(sampling_steps=3, score_thr=0.0, box_renewal=False))
    cfg['test_cfg'].update(test_cfg)
    return cfg


def _model(**test_cfg):
    torch.manual_seed(0)
    model = MODELS.build(_cfg(**test_cfg))
    model.init_weights()
    return model


GT_BOXES = [[[5., 5, 30, 55], [50, 10, 80, 60]], [[20., 8, 45, 60]]]


def _train_batch(seed=0):
    """Two images with noisy states made by the DualNoiseGenerator's
    formula."""
    g = torch.Generator().manual_seed(seed)
    gen = DualNoiseGenerator('unused.npz', diffusion=dict(num_proposals=N))
    samples = []
    for i, boxes in enumerate(GT_BOXES):
        b = torch.tensor(boxes)
        e0 = F.normalize(torch.randn(len(b), D, generator=g), dim=-1)
        t = 400 + 200 * i
        cxcywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]],
                           1) / torch.tensor([W, H, W, H])
        inds = torch.arange(N) % len(b)
        x_b = gen.q_sample(((2 * cxcywh - 1) * 2.0)[inds].numpy(), t,
                           torch.randn(N, 4, generator=g).numpy())
        x_e = gen.q_sample((3.0 * e0)[inds].numpy(), t,
                           torch.randn(N, D, generator=g).numpy())
        ds = DetDataSample(
            metainfo=unscaled_metainfo(
                f'{i}.jpg', (H, W), split='train', diffusion_t=t))
        ds.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(b),
            labels=torch.zeros(len(b)).long(),
            teacher_embeds=e0)
        ds.noisy_instances = InstanceData(
            bboxes=torch.as_tensor(x_b).float(),
            embeds=torch.as_tensor(x_e).float(),
            gt_inds=inds)
        samples.append(ds)
    images = torch.rand(2, 3, H, W, generator=g)
    return images, samples


def _test_samples(splits=('gallery', 'gallery'), scale=0.5):
    samples = []
    for i, split in enumerate(splits):
        meta = dict(
            img_id=f'{i}.jpg',
            img_shape=(H, W),
            ori_shape=(int(H / scale), int(W / scale)),
            scale_factor=(scale, scale),
            split=split,
            batch_input_shape=(H, W),
            pad_shape=(H, W))
        ds = DetDataSample(metainfo=meta)
        if split == 'query':
            meta['query_index'] = i
            ds.set_metainfo(meta)
            # test pipelines load boxes after Resize: original pixels
            ds.gt_instances = InstanceData(
                bboxes=HorizontalBoxes(torch.tensor([[40., 20, 100, 110]])),
                labels=torch.zeros(1).long())
        samples.append(ds)
    g = torch.Generator().manual_seed(1)
    return torch.rand(len(splits), 3, H, W, generator=g), samples


def _predict(model, images, samples):
    model.eval()
    with torch.no_grad():
        return [
            s.pred_instances
            for s in model.predict(images, copy.deepcopy(samples))
        ]


def test_loss_falls_on_a_tiny_config():
    model = _model()
    model.train()
    images, samples = _train_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(25):
        losses = model.loss(images, samples)
        assert set(losses) == {
            'loss_cls', 'loss_bbox', 'loss_giou', 'loss_reid'
        }
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.7 * first, history


def test_shipped_recipe_loss_falls_on_a_tiny_config():
    # the criterion and passes of psdiff_r50_cuhk.py (dynamic-k matching,
    # IoU-aware class targets, 3 passes) on the tiny model
    register_all_modules()
    shipped = Config.fromfile(
        osp.join(REPO, 'configs/psdiff/psdiff_r50_cuhk.py')).model
    cfg = _cfg()
    cfg['bbox_head']['criterion'] = shipped.bbox_head.criterion.to_dict()
    cfg['train_cfg'] = shipped.train_cfg.to_dict()
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    assert model.bbox_head.criterion.cls_iou_target
    images, samples = _train_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history, cls = [], []
    for _ in range(25):
        losses = model.loss(images, samples)
        assert {'loss_cls', 'p0.loss_cls', 'p1.loss_cls'} <= set(losses)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
        cls.append(losses['loss_cls'].item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.7 * first, history
    assert all(torch.isfinite(torch.tensor(cls)))


def test_training_passes_share_the_layer_and_refine():
    model = _model()
    model.train()
    images, samples = _train_batch()
    one = model.loss(images, samples)
    model.train_cfg.num_passes = 3
    torch.manual_seed(0)
    three = model.loss(images, samples)
    # the last pass keeps the plain names, earlier ones get a prefix
    assert set(three) == set(one) | {
        f'p{k}.{name}'
        for k in (0, 1)
        for name in one
    }
    # pass 0 is the one-pass computation; pass 1 reads pass 0's boxes
    for name in one:
        torch.testing.assert_close(three[f'p0.{name}'], one[name])
    assert not torch.equal(three['p1.loss_giou'], three['p0.loss_giou'])
    # every pass's loss reaches the same (shared) parameters
    model.zero_grad()
    three['loss_giou'].backward()
    assert model.bbox_head.denoiser.reg_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='num_passes'):
        MODELS.build(dict(_cfg(), train_cfg=dict(num_passes=0)))
    with pytest.raises(KeyError, match='num_pass'):
        MODELS.build(dict(_cfg(), train_cfg=dict(num_pass=2)))


def test_missing_noisy_inputs_is_a_clear_error():
    model = _model()
    images, samples = _train_batch()
    del samples[0].noisy_instances
    with pytest.raises(KeyError, match='DualNoiseGenerator'):
        model.loss(images, samples)


def test_inference_is_seeded():
    model = _model(seed=3)
    images, samples = _test_samples()
    a = _predict(model, images, samples)
    b = _predict(model, images, samples)
    for x, y in zip(a, b):
        assert len(x) > 0
        for key in ('bboxes', 'scores', 'embeddings'):
            assert torch.equal(x[key], y[key])
    # an image's result does not depend on the batch it came in
    alone = _predict(model, images[1:], samples[1:])[0]
    assert torch.allclose(alone.bboxes, a[1].bboxes, atol=1e-4)
    # another seed, another result
    model.test_cfg.seed = 4
    c = _predict(model, images, samples)
    assert not torch.equal(c[0].bboxes, a[0].bboxes)


def test_gallery_outputs():
    model = _model(score_thr=0.0, max_per_img=5)
    images, samples = _test_samples(scale=0.5)
    for res in _predict(model, images, samples):
        assert 0 < len(res) <= 5
        assert res.bboxes.shape == (len(res), 4)
        assert res.embeddings.shape == (len(res), D)
        assert torch.allclose(
            res.embeddings.norm(dim=-1), torch.ones(len(res)), atol=1e-5)
        # boxes back in original pixels (the input was resized by 0.5)
        assert res.bboxes[:, 2].max() <= 2 * W + 1e-3
        assert res.bboxes[:, 3].max() <= 2 * H + 1e-3
        assert torch.all(res.scores[:-1] >= res.scores[1:])
    model.test_cfg.score_thr = 1.0  # sigmoid scores stay below 1
    assert all(len(r) == 0 for r in _predict(model, images, samples))


def test_query_embedding_comes_from_the_given_box():
    model = _model()
    images, samples = _test_samples(('query', 'gallery'))
    res = _predict(model, images, samples)[0]
    assert len(res) == 1
    assert torch.equal(res.bboxes, torch.tensor([[40., 20, 100, 110]]))
    assert res.scores.tolist() == [1.0]
    assert res.embeddings.shape == (1, D)
    assert torch.allclose(res.embeddings.norm(), torch.tensor(1.0))
    # the box matters: another query box gives another embedding
    other = copy.deepcopy(samples)
    other[0].gt_instances.bboxes = HorizontalBoxes(
        torch.tensor([[100., 60, 180, 120]]))
    res2 = _predict(model, images, other)[0]
    assert not torch.allclose(res2.embeddings, res.embeddings)
    del other[0].gt_instances
    with pytest.raises(ValueError, match='exactly the query box'):
        _predict(model, images, other)


@pytest.mark.parametrize('sampler', ['ddim', 'dpm-solver', 'dpm-solver++'])
def test_samplers_and_step_counts(sampler):
    model = _model(sampler=sampler)
    calls = {'head': 0, 'backbone': 0}
    model.bbox_head.denoiser.register_forward_hook(
        lambda *a: calls.__setitem__('head', calls['head'] + 1))
    model.backbone.register_forward_hook(
        lambda *a: calls.__setitem__('backbone', calls['backbone'] + 1))
    images, samples = _test_samples()
    for steps in (1, 2, 5):
        calls.update(head=0, backbone=0)
        model.test_cfg.sampling_steps = steps
        res = _predict(model, images, samples)
        # one backbone pass per batch, one head pass per step
        assert calls == {'head': steps, 'backbone': 1}
        for r in res:
            assert len(r) > 0
            assert torch.isfinite(r.bboxes).all()
            assert torch.isfinite(r.embeddings).all()


def test_box_renewal_and_ensemble():
    model = _model(
        box_renewal=True,
        renewal_thr=0.5,
        use_ensemble=True,
        nms=None,
        sampling_steps=3)
    images, samples = _test_samples()
    res = _predict(model, images, samples)
    # ensembling keeps the proposals of all 3 steps (no NMS here)
    assert all(len(r) == min(3 * N, 100) for r in res)
    model.test_cfg.sampler = 'dpm-solver++'
    with pytest.raises(ValueError, match='box_renewal'):
        _predict(model, images, samples)


def test_sampler_switch_errors_are_clear():
    # merging only the type into the default DDIM entry keeps its eta
    model = _model(sampler=dict(type='dpm-solver++'))
    images, samples = _test_samples()
    with pytest.raises(ValueError, match='replace the whole entry'):
        _predict(model, images, samples)


def test_unknown_test_cfg_key():
    with pytest.raises(KeyError, match='sampling_step'):
        MODELS.build(dict(_cfg(), test_cfg=dict(sampling_step=4)))


def test_psdiff_r50_cuhk_config():
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO, 'configs/psdiff/psdiff_r50_cuhk.py'))
    cfg.model.backbone.init_cfg = None  # no download here
    model = MODELS.build(cfg.model)
    # three CDLs of ~9.8 M each (the paper's one: 31 M in all)
    n_params = sum(p.numel() for p in model.parameters())
    assert 50e6 <= n_params <= 60e6, n_params
    n_head = sum(p.numel() for p in model.bbox_head.parameters())
    assert 25e6 <= n_head <= 35e6, n_head
    assert len(model.bbox_head.extra_layers) == 2


SHIPPED = ['psdiff_r50_cuhk', 'psdiff_r50_prw', 'psdiff_swin_b_cuhk']


@pytest.mark.parametrize(
    'name', SHIPPED + [
        'psdiff_r18_synthetic', 'psdiff_r18_synthetic_paper',
        'psdiff_r18_synthetic_focal'
    ] + [f'{n}_paper' for n in SHIPPED])
def test_configs_agree_with_their_pipelines(name):
    cfg = Config.fromfile(osp.join(REPO, f'configs/psdiff/{name}.py'))
    gens = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if 'teacher_embeds' in t
    ]
    assert len(gens) == 1
    gen = gens[0]
    assert gen['teacher_embeds'].endswith('.npz')
    model = cfg.model
    # one dict of diffusion settings, given to the pipeline and the head
    diffusion = model.bbox_head.diffusion.to_dict()
    assert gen['diffusion'].to_dict() == diffusion
    assert 'num_proposals' not in model.test_cfg  # N_test = N_train
    assert diffusion['box_snr_scale'] == 2.0
    assert diffusion['embed_snr_scale'] == 3.0
    assert diffusion['num_timesteps'] == 1000
    assert 'embed_dims' not in model.bbox_head.denoiser
    if 'synthetic' not in name:
        assert diffusion['num_proposals'] == 300
        assert cfg.optim_wrapper.optimizer.lr == 2.5e-5
        assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
        assert cfg.train_cfg.max_iters == 90000
        assert cfg.param_scheduler[1].milestones == [70000, 84000]
        assert model.backbone.init_cfg.type == 'Pretrained'


def _recipe(name):
    """What a config says about how PSDiff trains and is tested, less what
    scales with the machine and data (proposals, widths, schedule)."""
    cfg = Config.fromfile(osp.join(REPO, f'configs/psdiff/{name}.py'))
    gen, = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if 'teacher_embeds' in t
    ]
    test_cfg = dict(cfg.model.test_cfg)
    diffusion = cfg.model.bbox_head.diffusion.to_dict()
    for scaled in ('num_proposals', 'embed_dims'):
        diffusion.pop(scaled)
    return dict(
        criterion=cfg.model.bbox_head.criterion.to_dict(),
        train_cfg=cfg.model.train_cfg.to_dict(),
        diffusion=diffusion,
        noise={
            k: gen.get(k)
            for k in ('center_teacher', 'pad_mode', 'beta_schedule',
                      'timestep_range')
        },
        num_layers=cfg.model.bbox_head.num_layers,
        clip_grad=cfg.optim_wrapper.clip_grad.to_dict(),
        optimizer=cfg.optim_wrapper.optimizer.type,
        weight_decay=cfg.optim_wrapper.optimizer.weight_decay,
        test_cfg=test_cfg,
        test_score_thr=cfg.test_evaluator.get('score_thr', 0.5))


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_configs_train_the_synthetic_recipe(name):
    # the synthetic benchmark vouches for what users train on real data:
    # everything but sizes and schedule is the same
    assert _recipe(name) == _recipe('psdiff_r18_synthetic')
    assert _recipe(f'{name}_paper') == _recipe('psdiff_r18_synthetic_paper')
    shipped, paper = _recipe(name), _recipe(f'{name}_paper')
    assert shipped['criterion']['cls_iou_target'] is True
    assert shipped['train_cfg'] == dict(num_passes=3)
    assert shipped['noise']['center_teacher'] is True
    assert shipped['test_cfg']['score_thr'] == 0.5
    assert shipped['test_score_thr'] == 0.5
    assert shipped['clip_grad']['max_norm'] == 1.0  # DiffusionDet's
    assert shipped['num_layers'] == 3 and paper['num_layers'] == 1
    # the paper's recipe: the criterion's defaults (Hungarian, 0/1 focal)
    assert set(paper['criterion']) == {'type'}
    assert paper['train_cfg'] == dict(num_passes=1)
    assert paper['noise']['center_teacher'] is False
    # at test time: passes per step as in training, step ensembling in
    # both, NMS 0.3 in the shipped settings, DiffusionDet's 0.5 in the paper's
    assert shipped['test_cfg']['num_passes'] is None
    assert shipped['test_cfg']['use_ensemble'] is True
    assert paper['test_cfg']['use_ensemble'] is True
    assert shipped['test_cfg']['nms']['iou_threshold'] == 0.3
    assert paper['test_cfg']['nms']['iou_threshold'] == 0.5
    paper['criterion'] = shipped['criterion']
    paper['train_cfg'] = shipped['train_cfg']
    paper['noise'] = shipped['noise']
    paper['num_layers'] = shipped['num_layers']
    paper['test_cfg']['nms'] = shipped['test_cfg']['nms']
    assert paper == shipped  # nothing else differs


def test_benchmark_and_flops_tools():
    model = _model().eval()
    res = load_tool('tools/analysis_tools/benchmark.py').benchmark(
        model, [1, 2], (H, W), num_images=1, warmup=0, device='cpu')
    rows = res['rows']
    assert [r['steps'] for r in rows] == [1, 2]
    assert all(r['head_ms'] > 0 and r['images_per_s'] > 0 for r in rows)
    assert rows[0]['extra_over_first_pct'] == 0
    assert model.test_cfg.sampling_steps == 3  # restored

    flops = load_tool('tools/analysis_tools/get_flops.py')
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        f_bb = flops._count(flops._BackboneNeck(model), (x, ))
        prepared = model.bbox_head.denoiser.prepare(model.extract_feat(x))
        boxes = torch.tensor([[[5., 5, 40, 60]] * N])
        f_head = flops._count(
            flops._HeadStep(model.bbox_head.denoiser),
            (*prepared, boxes, torch.randn(1, N, D), torch.tensor([9])))
    # the RoI gather (N * 49 bins * 16 taps * C) is part of a head step
    assert f_head > N * 49 * 16 * C and f_bb > f_head


def test_diffusion_person_search_is_a_second_name_of_psdiff():
    """The design's name builds the same class from the same config."""
    cfg = dict(_cfg(), type='DiffusionPersonSearch')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    assert type(model) is PSDiff
    assert model.state_dict().keys() == _model().state_dict().keys()


def _three_pass_model(**test_cfg):
    torch.manual_seed(0)
    model = MODELS.build(dict(_cfg(**test_cfg), train_cfg=dict(num_passes=3)))
    model.init_weights()
    return model.eval()


def test_passes_per_step_default_to_training_and_count():
    model = _three_pass_model()
    head = model.bbox_head
    assert head.passes_per_step() == 3  # test_cfg.num_passes None
    calls = {'head': 0}
    head.denoiser.register_forward_hook(
        lambda *a: calls.__setitem__('head', calls['head'] + 1))
    images, samples = _test_samples()
    for steps, passes in ((1, None), (2, None), (3, 1), (2, 2)):
        calls['head'] = 0
        model.test_cfg.sampling_steps = steps
        model.test_cfg.num_passes = passes
        _predict(model, images, samples)
        assert calls['head'] == steps * (passes or 3)
    for bad in (0, 1.5, True):
        # refused where it is set, and not kept
        with pytest.raises(ValueError, match='num_passes'):
            model.test_cfg.num_passes = bad
        assert model.test_cfg.num_passes == 2


def test_k_passes_in_a_step_are_k_chained_layer_calls():
    """A step of k passes equals k calls of the CDL chained by hand as in
    training (boxes through the box space, embeddings normalised, the query
    box pinned before every pass)."""
    model = _three_pass_model(sampling_steps=1)
    head = model.bbox_head
    images, samples = _test_samples(('query', 'gallery'))
    with torch.no_grad():
        feats = model.extract_feat(images)
        metas = [s.metainfo for s in samples]
        qbox = torch.tensor([[20., 10, 50, 55]])  # input pixels
        got = head.denoise(feats, metas, [qbox, None], num_passes=3)
        assert len(got) == 1
        # by hand
        whwh = head.img_whwh(metas, feats[0])
        s2 = head.diffusion.embed_snr_scale
        x = head._randn(head._generators(metas), (N, 4 + D), feats[0])
        known = head.boxes_to_x(qbox.reshape(1, 1, 4), whwh[:1])[0, 0]
        t = head.build_sampler().start(1).timesteps[0]
        ts = torch.full((2, ), t, dtype=torch.long)
        prepared = head.denoiser.prepare(feats)
        outs_by_pass = []
        for _ in range(3):
            x[0, 0, :4] = known
            outs = head.denoiser(prepared, head.x_to_boxes(x[..., :4], whwh),
                                 x[..., 4:] / s2, ts)
            outs_by_pass.append(outs)
            x = torch.cat([
                head.boxes_to_x(outs['bboxes'], whwh),
                F.normalize(outs['embeds'], dim=-1) * s2
            ],
                          dim=-1)
        for key in ('cls_scores', 'bboxes', 'embeds'):
            torch.testing.assert_close(got[0][key], outs_by_pass[-1][key])
        # one pass is the first of those calls: the passes do change it
        one = head.denoise(feats, metas, [qbox, None], num_passes=1)
        torch.testing.assert_close(one[0]['bboxes'], outs_by_pass[0]['bboxes'])
        assert not torch.allclose(one[0]['bboxes'], got[0]['bboxes'])


def test_nms_is_torchvision_and_matches_mmcv():
    """The head's NMS (torchvision, so PSDiff needs no compiled mmcv op)
    keeps what mmcv's ``batched_nms`` kept."""
    from mmcv.ops import batched_nms as mmcv_batched_nms

    from mmpsearch.models.heads import psdiff_head
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 80
    wh = torch.rand(200, 2, generator=g) * 40 + 4
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=g)
    labels = torch.randint(0, 2, (200, ), generator=g)
    keep = psdiff_head.batched_nms(boxes, scores, labels, 0.5)
    _, ref = mmcv_batched_nms(boxes, scores, labels,
                              dict(type='nms', iou_threshold=0.5))
    assert torch.equal(keep, ref)
    assert psdiff_head.batched_nms.__module__.startswith('torchvision')
    with pytest.raises(ValueError, match='test_cfg.nms'):
        _model(nms=dict(type='soft_nms', iou_threshold=0.5))


def test_separate_layers_per_pass():
    """``num_layers`` > 1: pass k trains and samples with layer
    min(k, K - 1); one layer is the paper's shared CDL."""
    torch.manual_seed(0)
    cfg = _cfg()
    cfg['bbox_head']['num_layers'] = 2
    model = MODELS.build(dict(cfg, train_cfg=dict(num_passes=3)))
    model.init_weights()
    head = model.bbox_head
    assert head.layer(0) is head.denoiser
    assert head.layer(1) is head.layer(2) is head.extra_layers[0]
    assert head.layer(1) is not head.denoiser
    # separate weights, separately initialised
    assert not torch.equal(
        head.layer(0).reg_out.weight,
        head.layer(1).reg_out.weight)
    model.train()
    images, samples = _train_batch()
    losses = model.loss(images, samples)
    model.zero_grad()
    losses['p0.loss_giou'].backward()
    # pass 0's loss reaches layer 0 only; the others read detached boxes
    assert head.layer(0).reg_out.weight.grad.abs().sum() > 0
    assert head.layer(1).reg_out.weight.grad is None
    calls = {0: 0, 1: 0}
    head.layer(0).register_forward_hook(
        lambda *a: calls.__setitem__(0, calls[0] + 1))
    head.layer(1).register_forward_hook(
        lambda *a: calls.__setitem__(1, calls[1] + 1))
    model.test_cfg.sampling_steps = 2
    _predict(model, *_test_samples())
    assert calls == {0: 2, 1: 4}
    for bad in (0, 1.0, True):
        cfg['bbox_head']['num_layers'] = bad
        with pytest.raises(ValueError, match='num_layers'):
            MODELS.build(cfg)


def test_shared_layer_ablation_config():
    """The shipped configs stack 3 CDLs; the ablation leaf differs only in
    using the paper's one; the paper leaves keep the paper's one too."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/psdiff/psdiff_r18_synthetic_shared.py'))
    base = Config.fromfile(
        osp.join(REPO, 'configs/psdiff/psdiff_r18_synthetic.py'))
    assert base.model.bbox_head.num_layers == 3
    assert cfg.model.bbox_head.num_layers == 1
    cfg.model.bbox_head.num_layers = 3
    assert cfg.model.to_dict() == base.model.to_dict()
    for name in ('psdiff_r50_cuhk_paper', 'psdiff_r18_synthetic_paper',
                 'psdiff_r50_prw_paper', 'psdiff_swin_b_cuhk_paper'):
        paper = Config.fromfile(
            osp.join(REPO, 'configs', 'psdiff', name + '.py'))
        assert paper.model.bbox_head.num_layers == 1, name
        assert paper.model.test_cfg.nms.iou_threshold == 0.5, name
        assert paper.model.test_cfg.use_ensemble is True, name
