"""data.crops: image: every training view's RandomResizedCrop box drawn over the whole decoded
image in the loader worker (the references': moco main_moco.py / main_lincls.py apply
torchvision's RandomResizedCrop to the full ImageFolder image), decoded at reduced scale and
resized there; with workers or device decoding, in pretraining and in the sgd linear probe."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from vissl_neg.config import load_config
from vissl_neg.data import build_dataset
from vissl_neg.data.image_folder import decode_views, draw_boxes
from vissl_neg.data.loader import ResumableBatchSampler
from vissl_neg.errors import ConfigError, DataError

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import write_imagenet_fixture

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def ref_get_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (the library the references call) on a
    width x height image -> (i, j, h, w)."""
    img = torch.empty(1, height, width)
    return RandomResizedCrop.get_params(img, list(scale), list(ratio))


def _stats(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """boxes (N, 4) as (x0, y0, w, h) -> mean area fraction, w / W, h / H, centre x / W, centre y / H."""
    x0, y0, w, h = boxes.T
    return np.stack(
        [w * h / (width * height), w / width, h / height, (x0 + w / 2) / width, (y0 + h / 2) / height], axis=1
    )


@pytest.mark.parametrize("width,height,scale", [(500, 375, SCALE), (375, 500, (0.2, 1.0)), (100, 400, SCALE)])
def test_box_distribution_is_torchvisions_on_non_square_images(width, height, scale):
    n = 4000
    gen = torch.Generator().manual_seed(0)
    ours = np.stack([draw_boxes(width, height, [(scale, RATIO)], gen)[0].numpy() for _ in range(n)])
    torch.manual_seed(1)
    ref = np.array(
        [[j, i, w, h] for i, j, h, w in (ref_get_params(width, height, scale, RATIO) for _ in range(n))],
        dtype=np.float64,
    )
    a, b = _stats(ours, width, height), _stats(ref, width, height)
    se = np.sqrt(a.var(0) / n + b.var(0) / n)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * se + 1e-9), (a.mean(0), b.mean(0), se)
    # the spread and the share of crops that needed the centre fallback match too
    assert np.all(np.abs(a.std(0) - b.std(0)) < 0.1 * b.std(0) + 1e-3)
    full = lambda s: np.mean((s[:, 1] == 1) & (s[:, 2] == 1))  # noqa: E731
    assert abs(full(a) - full(b)) < 0.02
    # boxes lie inside the whole image, not inside a centre square
    assert ours[:, 0].min() >= 0 and (ours[:, 0] + ours[:, 2]).max() <= width
    assert (ours[:, 1] + ours[:, 3]).max() <= height
    if width != height:
        long_side = 0 if width > height else 1
        start, length = ours[:, long_side], ours[:, 2 + long_side]
        margin = (max(width, height) - min(width, height)) / 2  # what a centre square leaves out
        outside = (start < margin) | (start + length > max(width, height) - margin)
        assert outside.mean() > 0.3  # many views reach beyond the centre square


def _photo(path, width=512, height=384):
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], axis=-1)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    return str(path)


def test_views_decode_at_reduced_scale_like_a_full_decode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    path = _photo(tmp_path / "photo.JPEG")
    crops = [((0.5, 1.0), RATIO), ((0.3, 0.6), RATIO)]
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = real_draft(self, mode, size)
        drafts.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = decode_views(path, crops, 64, torch.Generator().manual_seed(5), draft=True)
    # every box is >= 2 x 64 pixels on its shorter side: the JPEG decodes at a reduced scale
    assert len(drafts) == 1 and drafts[0][0] < 512
    full = decode_views(path, crops, 64, torch.Generator().manual_seed(5), draft=False)
    assert fast.shape == full.shape == (2, 3, 64, 64) and fast.dtype == torch.uint8
    assert (fast.float() - full.float()).abs().mean() < 3.0
    # the same box cut by hand from the full image
    boxes = draw_boxes(512, 384, crops, torch.Generator().manual_seed(5))
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    x0, y0, w, h = (int(v) for v in boxes[1])
    want = TF.resized_crop(image, y0, x0, h, w, [64, 64], antialias=True)
    assert (full[1].float() - want.float()).abs().max() <= 1


def test_keyed_sampler_keys_depend_on_seed_epoch_and_index_only():
    one = ResumableBatchSampler(40, 8, seed=3, keyed=True)
    two = ResumableBatchSampler(40, 4, seed=3, rank=1, world_size=2, keyed=True)
    keys = dict(item for batch in one for item in batch)
    assert all(keys[i] == k for batch in two for i, k in batch)  # same key whatever the batch or rank
    one.set_epoch(1)
    assert all(keys[i] != k for batch in one for i, k in batch)
    assert [i for i, _ in next(iter(ResumableBatchSampler(40, 8, seed=3, keyed=True)))] == next(
        iter(ResumableBatchSampler(40, 8, seed=3))
    )


def _cfg(root, out_dir, *extra):
    return load_config(
        None,
        [
            "data.name=imagenet",
            f"data.root={root}",
            "data.decode_size=36",
            "data.crops=image",
            "augment.size=32",
            "augment.mean=[0.485, 0.456, 0.406]",
            "augment.std=[0.229, 0.224, 0.225]",
            "augment.blur_kernel=3",
            "model.backbone=resnet10t",
            "model.head_hidden=32",
            "model.dim=16",
            "model.bn_splits=2",
            "negatives.size=16",
            "optim.batch_size=8",
            "train.progress=false",
            "eval.knn_every=-1",
            f"train.out_dir={out_dir}",
            *extra,
        ],
    )


def test_cropped_view_gives_both_views_and_keeps_the_square_for_evaluation(tmp_path):
    write_imagenet_fixture(tmp_path, corrupt=False)
    data = build_dataset(_cfg(tmp_path, tmp_path / "run").data, "train")
    view = data.cropped_view([((0.08, 1.0), RATIO), ((0.5, 1.0), RATIO)], 24)
    items = [(0, 11), (5, 12)]
    images, labels, used = view.__getitems__(items)
    assert images.shape == (2, 2, 3, 24, 24) and images.dtype == torch.uint8 and used.tolist() == [0, 5]
    assert torch.equal(view.__getitems__(items)[0], images)  # the key fixes the boxes
    assert not torch.equal(view.__getitems__([(0, 99), (5, 12)])[0][0], images[0])
    assert data.__getitems__([0, 5])[0].shape == (2, 3, 36, 36)  # the dataset itself is unchanged
    with pytest.raises(DataError, match="keyed=True"):
        view.__getitems__([0, 5])
    encoded = view.encoded_view()
    raw, _, _, boxes = encoded.__getitems__(items)
    assert isinstance(raw, list) and boxes.shape == (2, 2, 4)
    assert torch.equal(boxes[0, 1], draw_boxes(40, 30, view.crops, torch.Generator().manual_seed(11))[1])


def test_device_decoder_cuts_the_workers_boxes(tmp_path):
    from vissl_neg.data.device_decode import DeviceJpegDecoder

    fx = write_imagenet_fixture(tmp_path)
    data = build_dataset(_cfg(tmp_path, tmp_path / "run").data, "train")
    crops = [((0.08, 1.0), RATIO), ((0.5, 1.0), RATIO)]
    items = [(0, 1), (3, 2), (10, 3)]
    raw, _, indices, boxes = data.cropped_view(crops, 24).encoded_view().__getitems__(items)
    on_device = DeviceJpegDecoder(data, 36, torch.device("cpu"))(raw, indices, boxes, out=24)
    in_workers = data.cropped_view(crops, 24).__getitems__(items)[0]
    assert on_device.shape == in_workers.shape == (3, 2, 3, 24, 24)
    assert (on_device.float() - in_workers.float()).abs().mean() < 6.0  # PIL vs torchvision resampling
    bad = data.files.index(str(fx["corrupt"]))
    # the worker reads each header to draw the boxes: a file that is no image is skipped there
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        raw, _, indices, boxes = data.cropped_view(crops, 24).encoded_view().__getitems__([(bad, 1), (0, 2)])
    assert indices.tolist() == [bad + 1, 0]
    out = DeviceJpegDecoder(data, 36, torch.device("cpu"))(raw, indices, boxes, out=24)
    assert out.shape == (2, 2, 3, 24, 24)
    # a file whose header reads but whose body does not is replaced on the device
    raw[0] = raw[0][:40]
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        out = DeviceJpegDecoder(data, 36, torch.device("cpu"))(raw, indices, boxes, out=24)
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("decode_on", ["workers", "device"])
def test_training_and_exact_resume_with_whole_image_crops(tmp_path, decode_on):
    write_imagenet_fixture(tmp_path / "data", corrupt=False)
    from vissl_neg.engine.trainer import Trainer

    def run(out, *extra):
        return Trainer(
            _cfg(tmp_path / "data", out, f"data.decode_on={decode_on}", "train.epochs=2", "train.ckpt_every=2", *extra)
        )

    whole = run(tmp_path / "a")
    assert whole.sampler.keyed and whole.loader_set.crops is not None
    result = whole.fit()
    assert result["step"] == 2 * (24 // 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(tmp_path / "b", "train.max_steps=4").fit()
        resumed = run(tmp_path / "b")
        assert resumed.step == 4
        resumed.fit()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_linear_probe_crops_the_whole_image(tmp_path, monkeypatch):
    """Every training view of the probe is a box drawn over the whole 40 x 30 file (not the
    36 x 36 decode), at the probe's scale; the reported top-1 is the saved classifier's accuracy
    on the centre-cropped test images, recomputed here image by image."""
    from vissl_neg.augment import EvalTransform
    from vissl_neg.data import image_folder
    from vissl_neg.eval.linear_sgd import CHECKPOINT, linear_sgd
    from vissl_neg.models import build_backbone

    drawn = []
    real_draw = image_folder.draw_boxes

    def spy(width, height, crops, generator):
        drawn.append((width, height, crops))
        return real_draw(width, height, crops, generator)

    monkeypatch.setattr(image_folder, "draw_boxes", spy)
    write_imagenet_fixture(tmp_path / "data", corrupt=False)
    cfg = _cfg(
        tmp_path / "data",
        tmp_path / "run",
        "data.num_workers=0",
        "eval.linear_protocol=sgd",
        "eval.linear_epochs=2",
        "eval.linear_batch_size=8",
        "eval.linear_schedule=cosine",
        "eval.linear_lr_scaling=linear",
    )
    torch.manual_seed(0)
    backbone = build_backbone("resnet10t", 3)
    result = linear_sgd(cfg, backbone, torch.device("cpu"), run_dir=tmp_path, progress=False)
    assert "(whole image)" in result["classifier"] and "cosine" in result["classifier"]
    assert len(drawn) == 2 * result["train_size"] == 2 * 24  # one box per image and epoch
    assert {(w, h) for w, h, _ in drawn} == {(40, 30)}
    assert all(len(c) == 1 and c[0][0] == SCALE and c[0][1] == pytest.approx(RATIO) for *_, c in drawn)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    classifier = torch.nn.Linear(*reversed(state["classifier"]["weight"].shape))
    classifier.load_state_dict(state["classifier"])
    test_set, centre = build_dataset(cfg.data, "test"), EvalTransform(cfg.augment, 3)
    correct = 0
    for i in range(len(test_set)):
        image, label, _ = test_set[i]
        with torch.no_grad():
            correct += int(classifier(backbone(centre(image.unsqueeze(0)))).argmax(1).item() == int(label))
    assert result["test_size"] == len(test_set) == 8 and result["top1"] == round(100 * correct / len(test_set), 2)


def test_crops_key_is_checked_and_belongs_to_image_folders():
    with pytest.raises(ConfigError, match="config key 'data.crops' must be one of square, image"):
        load_config(None, ["data.name=imagenet", "data.crops=whole"])
    # Fashion-MNIST has no such key: setting it would silently do nothing, so it is refused
    for override in ("data.crops=image", "data.decode_on=device", "data.decode_size=128"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [override])
        key = override.split("=")[0]
        assert str(info.value) == (
            f"config key '{key}' belongs to data.name=imagenet or imagenet100 or image_folder, "
            "not data.name=fashion_mnist"
        )


def test_square_dataset_takes_keyed_items(tmp_path):
    write_imagenet_fixture(tmp_path, corrupt=False)
    data = build_dataset(_cfg(tmp_path, tmp_path / "run").data, "train")
    assert torch.equal(data.__getitems__([(3, 7), (1, 8)])[0], data.__getitems__([3, 1])[0])


def test_imagenet_configs_claim_whole_image_crops():
    for name in ("imagenet_mocov2", "imagenet_mocov3_vits"):
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.data.crops == "image"
        assert (cfg.data.decode_size, cfg.augment.size) == (256, 224)  # evaluation: resize 256, centre 224
