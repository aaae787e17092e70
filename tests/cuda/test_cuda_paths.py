"""The other CUDA paths: torch.compile, nvJPEG decoding, device views, the cross-view step and
recall, checkpoints moving between CUDA and the CPU."""

from __future__ import annotations

import pytest
import torch
from cuda_helpers import DEVICE, ON_CUDA, batch, make_trainer

from vissl_neg.augment import ops
from vissl_neg.augment.views import ViewAugment
from vissl_neg.config import config_from_dict, load_config, to_dict
from vissl_neg.engine.trainer import Trainer

from helpers import GEO_VIEWS_OFF, write_fmnist_fixture, write_imagenet_fixture


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=512, n_test=64)
    return root


def test_compiled_step_matches_eager(data_root, tmp_path):
    eager = make_trainer(data_root, tmp_path / "eager")
    compiled = make_trainer(data_root, tmp_path / "compiled", ["train.compile=true"])
    assert compiled.query_encoder is not compiled.model.encoder_q or not ON_CUDA  # an OptimizedModule
    compiled.model.load_state_dict(eager.model.state_dict())
    for i in range(3):
        images, labels, indices = batch(eager, i)
        torch.manual_seed(i)
        a = eager.train_step(images, labels, indices)["loss"]
        torch.manual_seed(i)
        b = compiled.train_step(images, labels, indices)["loss"]
        assert abs(float(a) - float(b)) <= 1e-3 * abs(float(a)), (i, float(a), float(b))


def test_nvjpeg_decoding_on_the_imagenet_layout_with_a_corrupt_file(tmp_path):
    fixture = write_imagenet_fixture(tmp_path / "imagenet", train_per_class=8, val_per_class=2)
    overrides = [
        f"data.root={tmp_path / 'imagenet'}",
        "data.name=imagenet",
        "data.decode_size=48",
        "augment.size=32",
        "augment.mean=[0.485,0.456,0.406]",
        "augment.std=[0.229,0.224,0.225]",
        "optim.batch_size=8",
        "model.bn_splits=2",
        "negatives.size=64",
        "train.epochs=1",
        f"train.device={DEVICE}",
        "eval.knn_every=-1",
        "train.progress=false",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    device = Trainer(load_config(None, overrides + ["data.decode_on=device"]), resume=False)
    workers = Trainer(
        load_config(None, overrides + ["data.decode_on=workers", f"train.out_dir={tmp_path / 'r2'}"]), resume=False
    )
    assert device.decoder is not None and device.decoder.device.type == DEVICE
    n = len(device.train_set)
    ids = list(range(n))
    encoded, _, indices = device.loader_set.__getitems__(ids)
    with pytest.warns(UserWarning, match="corrupt"):
        decoded = device.decoder(encoded, indices)
    assert decoded.device.type == DEVICE and decoded.dtype == torch.uint8 and decoded.shape == (n, 3, 48, 48)
    assert device.train_set.skipped.value >= 1
    bad = device.train_set.files.index(str(fixture["corrupt"]))
    reference, _, _ = workers.train_set.__getitems__([i for i in ids if i != bad])
    good = torch.cat([decoded[:bad], decoded[bad + 1 :]]).cpu()
    # nvJPEG and libjpeg-turbo round the IDCT differently; the resize is the same code
    assert (good.float() - reference.float()).abs().mean() < 2.0
    assert device.fit()["step"] == device.total_steps


def test_device_views_draw_per_sample_and_equal_the_cpu_ops():
    cfg = load_config(None, ["augment.size=24", "augment.erase_p=0.3"]).augment
    aug = ViewAugment(cfg, 3).to(DEVICE)
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(64, 1, 1, 1).to(DEVICE)
    views = aug(one)
    assert views.device.type == DEVICE and views.shape == (64, 3, 24, 24)
    distinct = torch.unique(views.flatten(1).round(decimals=4), dim=0).shape[0]
    assert distinct >= 60, distinct
    x = torch.rand(8, 3, 32, 32)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 16.0]] * 8)
    flip = torch.arange(8) % 2 == 0
    f = torch.linspace(0.6, 1.4, 8)
    for fn, args in (
        (ops.resized_crop, (boxes, (24, 24), flip)),
        (ops.adjust_contrast, (f,)),
        (ops.adjust_hue, (f - 1.0,)),
        (ops.gaussian_blur, (f, 5, flip)),
        (ops.sharpen, (f, flip)),
    ):
        cpu = fn(x, *args)
        gpu = fn(x.to(DEVICE), *(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args))
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def _geo(root, out_dir, device):
    from vissl_neg.engine.geo_trainer import GeoTrainer

    off = list(GEO_VIEWS_OFF)
    overrides = [
        f"data.root={root}",
        "data.sat_size=32",
        "data.pano_size=[16,64]",
        "model.backbone=resnet10t",
        "optim.batch_size=8",
        "sampling.neighbour_select=4",
        "sampling.neighbour_range=8",
        "train.epochs=1",
        f"train.device={device}",
        "train.amp=off",
        "train.progress=false",
        "train.cudnn_benchmark=false",
        "train.deterministic=true",
        f"train.out_dir={out_dir}",
        *off,
    ]
    return GeoTrainer(load_config("configs/cvusa_fixture.yaml", overrides), resume=False)


def test_geo_step_and_recall_on_cuda_equal_the_cpu(tmp_path):
    from vissl_neg.geo.fixture import write_cvusa_fixture
    from vissl_neg.geo.metrics import recall_at_k

    write_cvusa_fixture(tmp_path / "cvusa", n_train=24, n_val=8, sat_size=32, pano_size=(16, 64))
    cpu, gpu = _geo(tmp_path / "cvusa", tmp_path / "cpu", "cpu"), _geo(tmp_path / "cvusa", tmp_path / "gpu", DEVICE)
    gpu.model.load_state_dict(cpu.model.state_dict())
    pano, sat, _, _ = cpu.train_set.__getitems__(list(range(8)))
    for step in range(2):
        a = cpu.train_step(pano, sat)
        b = gpu.train_step(pano.to(DEVICE), sat.to(DEVICE))
        assert abs(float(a["loss"]) - float(b["loss"])) <= 1e-4 * abs(float(a["loss"])), step
        if step == 0:  # the gradients of the same step; after it AdamW's first, sign-like update
            # turns rounding-level gradient differences into lr-sized weight differences
            for (name, p), q in zip(cpu.model.named_parameters(), gpu.model.parameters()):
                if p.grad is not None:
                    err = (q.grad.cpu() - p.grad).norm() / p.grad.norm().clamp_min(1e-12)
                    # the logit scale's gradient is one scalar summed over all B² pairs: 1.2e-3 seen on an H200
                    assert err < (5e-3 if name == "logit_scale" else 1e-3), (name, float(err))
    g = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.normalize(torch.randn(5000, 64, generator=g), dim=1)
    query = torch.nn.functional.normalize(ref[:1000] + 0.6 * torch.randn(1000, 64, generator=g), dim=1)
    gt = torch.arange(1000)
    want = recall_at_k(query.double(), ref.double(), gt, chunk_size=128)
    got = recall_at_k(query.to(DEVICE), ref.to(DEVICE), gt.to(DEVICE), chunk_size=128)
    for k in want:  # float32 on the GPU vs float64: a near-tie may flip, one query in 1000 at most
        assert abs(got[k] - want[k]) <= 0.1, (k, got[k], want[k])


@pytest.mark.parametrize(("first", "then"), [(DEVICE, "cpu"), ("cpu", DEVICE)])
def test_checkpoint_moves_between_cuda_and_cpu(data_root, tmp_path, first, then):
    run = tmp_path / "run"
    a = make_trainer(data_root, run, ["train.max_steps=3"], device=first)
    a.fit()
    saved = {k: v.detach().cpu().clone() for k, v in a.model.state_dict().items()}
    values = to_dict(a.cfg)
    values["train"]["device"], values["train"]["max_steps"] = then, 5
    b = Trainer(config_from_dict(values), resume=True)
    assert b.step == 3 and b.device.type == then
    for k, v in b.model.state_dict().items():
        assert v.device.type == then and torch.equal(v.cpu(), saved[k]), k
    assert b.fit()["step"] == 5


def test_retrieval_metrics_on_cuda_equal_the_cpu():
    from vissl_neg.geo import average_precision, recall_at_k_labels, university1652_metrics, vigor_recall

    g = torch.Generator().manual_seed(0)
    grid = lambda n: torch.randint(-2, 3, (n, 8), generator=g).float() / 4  # noqa: E731  (exact products: ties agree)
    query, ref = grid(300), grid(2000)
    positive = torch.randint(2000, (300,), generator=g)
    semi = torch.randint(-1, 2000, (300, 3), generator=g)
    q_labels, r_labels = torch.randint(50, (300,), generator=g), torch.randint(70, (2000,), generator=g)

    def run(device):
        to = lambda *ts: [t.to(device) for t in ts]  # noqa: E731
        return [
            vigor_recall(*to(query, ref, positive, semi), chunk_size=64),
            recall_at_k_labels(*to(query, ref, q_labels, r_labels), chunk_size=64),
            university1652_metrics(*to(query, ref, q_labels, r_labels), chunk_size=64, distractors="sample4geo"),
            average_precision(*to(query, ref, q_labels, r_labels), chunk_size=64).cpu().tolist(),
        ]

    got, want = run(DEVICE), run("cpu")
    assert got[:2] == want[:2]  # counts of exact comparisons: equal
    assert got[2] == pytest.approx(want[2], abs=1e-9)  # AP sums: atomic adds on the GPU, another order
    assert got[3] == pytest.approx(want[3], abs=1e-12)
