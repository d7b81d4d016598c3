"""Two CPU processes (gloo, mmengine's DDP wrapper) train like one
process with the same global batch.

Setup chosen so that this is mathematically exact: GroupNorm instead of
BatchNorm (no batch statistics) and no dropout, equal image sizes on every
process (mmseg's cross-entropy and the CWD/feature losses are then means
of per-image means), so DDP's gradient average over the 2 processes of 2
images equals the gradient of the 4-image batch. ``CIRKDMiniBatchLoss``
(``gather=True``) relates pixels across images: every process gathers the
global batch, and the test shows it gives the single-process value and
gradient too. Differences are float summation order only (< 1e-5).

The processes run mmengine's ``MMDistributedDataParallel.train_step``,
the call the runner makes under ``tools/dist_train.sh`` /
``tools/slurm_train.sh`` (mmengine's ``init_dist`` needs a GPU, so the
process group is created directly here).
"""
import os

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from tests.conftest import build_distiller, tiny_pspnet

STEPS = 3
WORLD = 2


def gn_pspnet(channels: int) -> dict:
    spec = tiny_pspnet(channels)
    gn = dict(type='GN', num_groups=8, requires_grad=True)
    spec['backbone']['norm_cfg'] = gn
    spec['decode_head'].update(norm_cfg=gn, dropout_ratio=0.0)
    spec['auxiliary_head'].update(norm_cfg=gn, dropout_ratio=0.0)
    return spec


TERMS = dict(
    logits=dict(student='decode_head.conv_seg',
                teacher='decode_head.conv_seg',
                loss=dict(type='ChannelWiseDivergence', tau=2.0,
                          loss_weight=3.0)),
    feat=dict(student='decode_head.bottleneck',
              teacher='decode_head.bottleneck',
              connector=dict(type='ConvConnector'),
              loss=dict(type='FeatureMSELoss')),
    cirkd=dict(student='decode_head.bottleneck',
               teacher='decode_head.bottleneck',
               loss=dict(type='CIRKDMiniBatchLoss', gather=True,
                         loss_weight=5.0)))


def make_batch(indices):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8,
                         generator=gen)
    labels = torch.randint(0, 19, (4, 1, 32, 32), generator=gen)
    inputs, samples = [], []
    for i in indices:
        inputs.append(imgs[i])
        s = SegDataSample(metainfo=dict(img_shape=(32, 32),
                                        ori_shape=(32, 32),
                                        pad_shape=(32, 32)))
        s.gt_sem_seg = PixelData(data=labels[i])
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def build():
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    model = build_distiller('seg', TERMS, student=gn_pspnet(32),
                            teacher=gn_pspnet(64),
                            dry_run_input_size=(32, 32))
    model.student.data_preprocessor.size = (32, 32)
    model.train()
    optim = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
    return model, optim, build_optim_wrapper


def train(model, optim_wrapper, batch):
    totals = []
    for _ in range(STEPS):
        log_vars = model.train_step(batch, optim_wrapper)
        totals.append({k: float(v) for k, v in log_vars.items()})
    return totals


def worker(rank: int, port: int, out: str) -> None:
    from mmengine.model import MMDistributedDataParallel
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch_dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        model, optim, build_optim_wrapper = build()
        ddp = MMDistributedDataParallel(module=model, device_ids=None)
        optim_wrapper = build_optim_wrapper(ddp.module, optim)
        logs = train(ddp, optim_wrapper, make_batch([2 * rank,
                                                     2 * rank + 1]))
        torch.save(dict(logs=logs, state=model.state_dict()),
                   f'{out}.{rank}')
    finally:
        torch_dist.destroy_process_group()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch_dist.is_available() or
                    not torch_dist.is_gloo_available(),
                    reason='torch.distributed with gloo is not available')
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    out = str(tmp_path / 'rank')
    mp.start_processes(worker, args=(free_port(), out), nprocs=WORLD,
                       join=True, start_method='spawn')
    ranks = [torch.load(f'{out}.{r}', weights_only=False)
             for r in range(WORLD)]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, optim, build_optim_wrapper = build()
        single = train(model, build_optim_wrapper(model, optim),
                       make_batch([0, 1, 2, 3]))
    finally:
        torch.set_num_threads(threads)

    for step in range(STEPS):
        for key in ('loss', 'loss_kd_logits', 'loss_kd_feat',
                    'loss_kd_cirkd', 'decode.loss_ce'):
            mean = sum(r['logs'][step][key] for r in ranks) / WORLD
            assert mean == pytest.approx(single[step][key], rel=1e-5,
                                         abs=1e-6), (step, key)
        # the gathered loss is the global value on every process
        assert ranks[0]['logs'][step]['loss_kd_cirkd'] == pytest.approx(
            ranks[1]['logs'][step]['loss_kd_cirkd'], rel=1e-6)
    ref = model.state_dict()
    moved = 0
    for key, value in ref.items():
        for r in ranks:
            torch.testing.assert_close(r['state'][key], value, rtol=0,
                                       atol=1e-5, msg=key)
        assert torch.equal(ranks[0]['state'][key], ranks[1]['state'][key])
    # the steps really changed student and connector weights
    model0, _, _ = build()
    for key, value in model0.state_dict().items():
        if value.is_floating_point() and not torch.equal(value, ref[key]):
            moved += 1
    assert moved > 50
    assert not torch.equal(
        model0.state_dict()['distill_terms.feat.connectors.0.0.conv.conv.'
                            'weight'],
        ref['distill_terms.feat.connectors.0.0.conv.conv.weight'])
