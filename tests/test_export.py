"""Export of a trained run in timm's Hugging Face hub layout (model.safetensors, config.json,
README.md) plus backbone.pth for torchvision and model_card.json."""

from __future__ import annotations

import hashlib
import json

import pytest
import safetensors.torch
import timm
import torch
import torch.nn as nn
import torchvision
import yaml

from vissl_neg.cli.evaluate import evaluate_run
from vissl_neg.config import load_config
from vissl_neg.engine.trainer import Trainer
from vissl_neg.errors import UserError
from vissl_neg.export import export_run
from vissl_neg.models import apply_small_stem

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import tiny_overrides, write_fmnist_fixture

FILES = {"model.safetensors", "config.json", "README.md", "backbone.pth", "model_card.json"}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _trained_features(trainer, x: torch.Tensor) -> torch.Tensor:
    backbone = trainer.model.encoder_q.backbone.eval()
    with torch.no_grad():
        return backbone(x)


def _hub_model(export_dir) -> nn.Module:
    return timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(root, n_train=256, n_test=64)
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A resnet10t run trained for 2 steps, exported to RUN_DIR/export."""
    run_dir = tmp_path_factory.mktemp("run") / "r10t"
    cfg = load_config(None, tiny_overrides(data_root, run_dir) + ["train.max_steps=2"])
    trainer = Trainer(cfg)
    initial = {k: v.clone() for k, v in trainer.model.encoder_q.backbone.state_dict().items()}
    result = trainer.fit()
    assert result["step"] == 2
    (run_dir / "knn.json").write_text(json.dumps({"top1": 42.5, "k": 20, "step": 2}))
    (run_dir / "knn_random_init.json").write_text(json.dumps({"top1": 11.25, "step": 2}))
    card = export_run(run_dir)
    return trainer, run_dir, card, initial


def test_export_files_and_card(trained):
    _, run_dir, card, _ = trained
    out = run_dir / "export"
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads((out / "model_card.json").read_text()) == card
    assert card["sha256"] == {name: _sha256(out / name) for name in ("model.safetensors", "backbone.pth")}
    assert card["backbone"] == "resnet10t" and card["method"] == "moco_v2"
    assert card["model_args"]["num_classes"] == 0 and card["model_args"]["in_chans"] == 1
    assert "img_size" not in card["model_args"] and "patch_size" not in card["model_args"]
    assert card["step"] == 2 and card["epochs"] == 0
    assert card["knn_top1"] == 42.5  # picked up from RUN_DIR/knn.json
    assert "linear_probe_top1" not in card
    assert card["config"]["optim"]["batch_size"] == 64
    assert card["input"]["mean"] == [pytest.approx(0.2860)] and card["input"]["input_size"] == [1, 28, 28]


def test_config_json_is_timms_layout(trained):
    _, run_dir, _, _ = trained
    config = json.loads((run_dir / "export" / "config.json").read_text())
    plain = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 0
    assert config["num_features"] == plain.num_features == 512
    assert config["model_args"]["in_chans"] == 1 and config["model_args"]["num_classes"] == 0
    pre = config["pretrained_cfg"]
    assert pre["input_size"] == [1, 28, 28]
    assert pre["mean"] == [pytest.approx(0.2860)] and pre["std"] == [pytest.approx(0.3530)]
    assert pre["crop_pct"] == 1.0 and pre["interpolation"] == "bilinear"
    assert pre["first_conv"] == plain.pretrained_cfg["first_conv"] and pre["classifier"] == "fc"
    assert pre["license"] == "apache-2.0"
    assert "tag" not in pre and "hf_hub_id" not in pre  # nothing of timm's own weights


def test_local_dir_load_gives_the_trained_features(trained):
    trainer, run_dir, _, initial = trained
    model = _hub_model(run_dir / "export")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), _trained_features(trainer, x))
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (1, 28, 28)
    # the weights are the checkpoint's query backbone, read independently from last.ckpt
    state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    prefix = "encoder_q.backbone."
    ckpt_sd = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    sd = safetensors.torch.load_file(run_dir / "export" / "model.safetensors")
    pth = torch.load(run_dir / "export" / "backbone.pth", map_location="cpu", weights_only=True)
    assert set(ckpt_sd) == set(sd) == set(pth)
    for k in sd:
        assert torch.equal(sd[k], ckpt_sd[k]) and torch.equal(pth[k], ckpt_sd[k]), k
    # two SGD steps changed the weights
    assert any(not torch.equal(sd[k], initial[k]) for k in sd if sd[k].is_floating_point())
    timm.create_model("resnet10t", num_classes=0, in_chans=1).load_state_dict(pth, strict=True)


def test_readme_is_a_hub_model_card(trained):
    _, run_dir, card, _ = trained
    readme = (run_dir / "export" / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert {"image-feature-extraction", "self-supervised", "moco"} <= set(meta["tags"])
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "accuracy", "name": "kNN top-1 (k=20)", "value": 42.5}]
    assert result["dataset"]["split"] == "test"
    assert "| kNN top-1 (k=20) | test | 42.5 | 11.25 | `knn.json` |" in readme  # with its random-init baseline
    assert 'timm.create_model("hf-hub:USER/REPO", pretrained=True)' in readme and "local-dir:" in readme
    full = yaml.safe_load(readme.split("```yaml\n")[1].split("```")[0])
    assert full == card["config"]
    assert card["sha256"]["model.safetensors"] in readme


def test_stale_results_are_left_out(trained, tmp_path):
    _, run_dir, _, _ = trained
    probe = run_dir / "linear_probe.json"
    probe.write_text(json.dumps({"top1": 77.0, "step": 1}))
    try:
        card = export_run(run_dir, tmp_path / "out", repo_id="me/r10t", license="mit")
    finally:
        probe.unlink()
    assert "linear_probe_top1" not in card and card["knn_top1"] == 42.5
    assert card["skipped"] == ["linear_probe.json (evaluated at step 1, the checkpoint is at step 2)"]
    meta = _front_matter((tmp_path / "out" / "README.md").read_text())
    assert meta["license"] == "mit" and meta["model-index"][0]["name"] == "r10t"
    assert len(meta["model-index"][0]["results"]) == 1


def test_export_to_other_folder_is_identical(trained, tmp_path):
    _, run_dir, card, _ = trained
    card2 = export_run(run_dir, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == FILES
    assert card2["sha256"] == card["sha256"]  # byte-identical weights files
    sd1 = safetensors.torch.load_file(run_dir / "export" / "model.safetensors")
    sd2 = safetensors.torch.load_file(tmp_path / "out" / "model.safetensors")
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_resnet18_loads_into_timm_and_torchvision(data_root, tmp_path):
    run_dir = tmp_path / "r18"
    cfg = load_config(None, tiny_overrides(data_root, run_dir) + ["model.backbone=resnet18"])
    trainer = Trainer(cfg)
    with torch.no_grad():  # make the weights distinguishable from any fresh init
        for p in trainer.model.encoder_q.backbone.parameters():
            p.add_(0.01)
    trainer.save()
    card = export_run(run_dir)
    weights = run_dir / "export" / "backbone.pth"
    assert card["sha256"]["backbone.pth"] == _sha256(weights) and card["backbone"] == "resnet18"
    sd = torch.load(weights, map_location="cpu", weights_only=True)

    timm.create_model("resnet18", num_classes=0, in_chans=1).load_state_dict(sd, strict=True)

    tv = torchvision.models.resnet18()
    tv.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    result = tv.load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    assert torch.equal(tv.conv1.weight, sd["conv1.weight"])
    assert torch.equal(tv.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    # same pooled features as timm's model and as the trained backbone
    tv.fc = nn.Identity()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(tv.eval()(x), _hub_model(run_dir / "export")(x), atol=1e-5)
        assert torch.equal(_hub_model(run_dir / "export")(x), _trained_features(trainer, x))


def test_vit_run_exports_its_size_and_patches(data_root, tmp_path):
    """A ViT trained on 28x28 with 4x4 patches: config.json carries img_size and patch_size,
    so local-dir: rebuilds the same model (7x7 patches + class token), with the same features."""
    run_dir = tmp_path / "vit"
    cfg = load_config(
        None,
        tiny_overrides(data_root, run_dir)
        + ["model.backbone=vit_tiny_patch16_224", "model.patch_size=4", "train.max_steps=1", "eval.knn_every=-1"],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    card = export_run(run_dir)
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["model_args"]["img_size"] == [28, 28] and config["model_args"]["patch_size"] == 4
    assert config["model_args"]["in_chans"] == 1
    assert config["pretrained_cfg"]["fixed_input_size"] is True
    assert config["pretrained_cfg"]["input_size"] == [1, 28, 28]
    model = _hub_model(run_dir / "export")
    assert model.pos_embed.shape[1] == 7 * 7 + 1 and model.patch_embed.patch_size == (4, 4)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), _trained_features(trainer, x))
    assert "patch_size=4" in (run_dir / "export" / "README.md").read_text()
    assert card["batch_norm_layers"] == 0
    # tools/knn.py rebuilds the same ViT from the run's config
    result = evaluate_run(run_dir, "knn")
    assert result["step"] == 1 and 0 <= result["top1"] <= 100


def test_small_stem_run_is_refused_unless_allowed(data_root, tmp_path, capsys):
    """The stride-1 stem is no timm argument: a plain export would load into other features."""
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "export.py"
    spec = importlib.util.spec_from_file_location("_tool_export", tool)
    export_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_tool)
    run_dir = tmp_path / "small"
    trainer = Trainer(load_config(None, tiny_overrides(data_root, run_dir) + ["model.small_stem=true"]))
    trainer.save()
    with pytest.raises(SystemExit) as info:
        export_tool.main([str(run_dir)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model.small_stem=true" in err[0]
    assert not (run_dir / "export").exists()

    card = export_run(run_dir, allow_small_stem=True)
    assert card["small_stem"] is True
    assert "apply_small_stem" in (run_dir / "export" / "README.md").read_text()
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["vissl_neg"] == {"small_stem": True}
    x = torch.randn(2, 1, 28, 28)
    model = _hub_model(run_dir / "export")
    with torch.no_grad():
        assert not torch.allclose(model(x), _trained_features(trainer, x))
        assert torch.equal(apply_small_stem(model)(x), _trained_features(trainer, x))


def test_export_of_a_non_run_directory(tmp_path):
    with pytest.raises(UserError) as info:
        export_run(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_card_falls_back_to_the_training_monitor_of_the_same_step(tmp_path):
    from vissl_neg.eval.results import moco_results

    cfg = load_config(None, ["eval.knn_k=7"])
    state = {"step": 5, "metrics": [{"epoch": 1, "step": 5, "knn_top1": 33.333}]}
    (result,), skipped = moco_results(tmp_path, cfg, state)
    assert result["value"] == 33.33 and result["source"] == "last.ckpt" and "k=7" in result["name"]
    assert skipped == []
    assert moco_results(tmp_path, cfg, {"step": 6, "metrics": state["metrics"]}) == ([], [])


def _machine_paths(*paths) -> set[str]:
    """The absolute forms of ``paths``, the home folder and the working directory."""
    from pathlib import Path

    out = {str(Path.home()), str(Path.cwd())}
    for p in paths:
        out |= {str(p), str(p.resolve())}
    return {p for p in out if len(p) > 1}


def _files_holding(folder, needles: set[str]) -> list[tuple[str, str]]:
    return [
        (f.name, n) for f in sorted(folder.rglob("*")) if f.is_file() for n in needles if n.encode() in f.read_bytes()
    ]


def test_export_holds_no_path_of_the_training_machine(trained, data_root, tmp_path):
    """Every file of the export (weights included) is free of the data root, run and output
    folders, the home folder and the working directory; the card names the data set instead."""
    _, run_dir, card, _ = trained
    state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["config"]["data"]["root"] == str(data_root)  # the checkpoint itself does hold it
    out = tmp_path / "published"
    card2 = export_run(run_dir, out)
    needles = _machine_paths(data_root, run_dir, out, tmp_path)
    assert _files_holding(run_dir / "export", needles) == []
    assert _files_holding(out, needles) == []
    assert _files_holding(run_dir, {str(data_root)})  # the check finds what is there: the run's own files
    for c in (card, card2):
        assert c["dataset"] == {
            "name": "Fashion-MNIST",
            "hub_id": "zalando-datasets/fashion_mnist",
            "data.name": "fashion_mnist",
        }
        assert c["config"]["data"]["root"] == c["config"]["train"]["out_dir"] == "<local path, not published>"
        assert c["load"] == "timm.create_model('hf-hub:USER/REPO', pretrained=True)"
    # everything else of the config is the run's
    kept = {k: v for k, v in state["config"].items() if k not in ("data", "train")}
    assert {k: card["config"][k] for k in kept} == kept
    assert {k: v for k, v in card["config"]["train"].items() if k != "out_dir"} == {
        k: v for k, v in state["config"]["train"].items() if k != "out_dir"
    }


def test_public_config_replaces_paths_of_any_form():
    from vissl_neg.export.release import PLACEHOLDER, public_config

    config = {
        "data": {"root": "data/CVUSA", "neighbours": "auto", "classes": "", "name": "cvusa"},
        "model": {"pretrained_file": "C:\\weights\\convnext.pth", "backbone": "convnext_base"},
        "train": {"out_dir": "runs/x", "seed": 3},
        "negatives": {
            "strategies": [
                {"name": "filter", "file": "~/lists/a.txt", "keep": 8},
                {"name": "x", "file": "/home/u/b"},
                {"name": "y", "file": "rel/c"},
            ]
        },
    }
    out = public_config(config)
    assert out == {
        "data": {"root": PLACEHOLDER, "neighbours": "auto", "classes": "", "name": "cvusa"},
        "model": {"pretrained_file": PLACEHOLDER, "backbone": "convnext_base"},
        "train": {"out_dir": PLACEHOLDER, "seed": 3},
        "negatives": {
            "strategies": [
                {"name": "filter", "file": PLACEHOLDER, "keep": 8},
                {"name": "x", "file": PLACEHOLDER},
                {"name": "y", "file": "rel/c"},
            ]
        },
    }
    assert config["data"]["root"] == "data/CVUSA"  # a copy
    assert public_config({"data": {"neighbours": "/d/all.csv"}})["data"]["neighbours"] == PLACEHOLDER
