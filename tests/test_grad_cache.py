"""Gradient caching (vissl_neg/runtime/grad_cache.py): a cached step gives the loss and every
parameter's gradient of one full-batch step for timm's ViT and ConvNeXt; random draws are
replayed exactly (drop-path with chunk = batch is the plain step bit for bit); BatchNorm
running statistics move once per chunk, not twice; a GradScaler's scale reaches every
parameter exactly once; autocast is replayed; two gloo processes equal one.

Tolerances. fp32 gradients are compared per parameter as ‖g_cached − g_full‖ / ‖g_full‖.
Measured on this CPU (B = 8, chunks 1, 3, 4): ViT ≤ 4.5e-7, ConvNeXt ≤ 3.5e-6 (with the AVX2
emulation variables: ≤ 4.6e-7 and ≤ 3.6e-6) — the float reordering of summing per chunk; the
same full-batch step on a permuted batch differs from itself by 1.5e-6 (ViT) and 3.5e-6
(ConvNeXt) (AVX2: 1.3e-6, 3.8e-6). FP32_TOL = 3e-5 is about ten times that. In float64 the
same comparison is ≤ 5e-15 (FP64_TOL = 1e-11): a logic error shows up as 1e-3 or more there,
never as rounding.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from vissl_neg.losses import symmetric_info_nce
from vissl_neg.runtime.grad_cache import GradCache, GradCacheError, forward_in_chunks, split_rows

import helpers  # noqa: F401  (pins torch to one CPU thread)
from helpers import subprocess_env, write_fmnist_fixture

sys.path.insert(0, str(Path(__file__).resolve().parent))

FP32_TOL = 3e-5
FP64_TOL = 1e-11
B = 8


class Tower(nn.Module):
    """A timm backbone -> L2-normalised rows (in the backbone's dtype), and a learnable logit
    scale that only the loss uses (Sample4Geo's shape)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.logit_scale = nn.Parameter(torch.tensor(2.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=1)


def tower(name: str, dtype=torch.float32, **kwargs) -> tuple[Tower, int]:
    torch.manual_seed(0)
    if name == "vit":
        backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, **kwargs)
        size = 32
    elif name == "convnext":
        backbone = timm.create_model("convnext_atto", num_classes=0, **kwargs)
        size = 64
    else:
        backbone = timm.create_model("resnet10t", num_classes=0, **kwargs)
        size = 32
    return Tower(backbone).to(dtype).train(), size


def pair(size: int, dtype=torch.float32, n: int = B, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, 3, size, size, generator=g).to(dtype) for _ in range(2))


def loss_of(model: Tower, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    return symmetric_info_nce(fa, fb, model.logit_scale, label_smoothing=0.1)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def full_step(model: Tower, a, b):
    model.zero_grad(set_to_none=True)
    loss = loss_of(model, model(a), model(b))
    loss.backward()
    return loss.detach(), grads(model)


def per_chunk_step(model: Tower, a, b, chunk: int):
    """The reference for what chunking changes on its own: each chunk forwarded once with a graph,
    in the cached step's order (every chunk of a, then of b), one loss, one backward. Same random
    draws and the same per-chunk BatchNorm statistics as the cached step, no caching."""
    model.zero_grad(set_to_none=True)
    fa = torch.cat([model(x) for x in a.split(chunk)])
    fb = torch.cat([model(x) for x in b.split(chunk)])
    loss = loss_of(model, fa, fb)
    loss.backward()
    return loss.detach(), grads(model)


def cached_step(model: Tower, a, b, chunk: int, scaler=None):
    model.zero_grad(set_to_none=True)
    cache = GradCache()
    fa, fb = cache.embed(model, a, chunk_size=chunk), cache.embed(model, b, chunk_size=chunk)
    loss = loss_of(model, fa, fb)
    cache.backward(scaler.scale(loss) if scaler is not None else loss)
    return loss.detach(), grads(model)


def worst(want: dict, got: dict) -> float:
    """max over parameters of ‖got − want‖ / ‖want‖ (absolute where ‖want‖ = 0); every parameter present."""
    assert want.keys() == got.keys()
    out = 0.0
    for name, w in want.items():
        d, norm = (got[name] - w).norm().item(), w.norm().item()
        out = max(out, d / norm if norm > 0 else d)
    return out


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_cached_step_equals_the_full_batch_step_fp32(name):
    model, size = tower(name)
    a, b = pair(size)
    want_loss, want = full_step(model, a, b)
    assert "logit_scale" in want and len(want) == sum(1 for _ in model.parameters())
    for chunk in (3, 4):  # 3 leaves a short last chunk
        loss, got = cached_step(model, a, b, chunk)
        torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=0)
        assert worst(want, got) <= FP32_TOL, (chunk, worst(want, got))


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_cached_step_equals_the_full_batch_step_fp64(name):
    model, size = tower(name, torch.float64)
    a, b = pair(size, torch.float64)
    want_loss, want = full_step(model, a, b)
    loss, got = cached_step(model, a, b, 3)
    torch.testing.assert_close(loss, want_loss, rtol=1e-13, atol=0)
    assert worst(want, got) <= FP64_TOL


def test_drop_path_with_chunk_equal_to_the_batch_is_the_plain_step_bit_for_bit():
    """Same random draws in the same order: the loss, every gradient and the generator state
    after the step are those of the plain step, exactly."""
    model, size = tower("vit", drop_path_rate=0.3, proj_drop_rate=0.1, attn_drop_rate=0.1)
    a, b = pair(size)
    torch.manual_seed(5)
    want_loss, want = full_step(model, a, b)
    want_rng = torch.get_rng_state()
    torch.manual_seed(5)
    loss, got = cached_step(model, a, b, B)
    assert torch.equal(torch.get_rng_state(), want_rng)
    assert torch.equal(loss, want_loss)
    assert all(torch.equal(got[n], want[n]) for n in want)
    torch.manual_seed(6)  # other draws: another gradient (the draws matter)
    assert worst(want, full_step(model, a, b)[1]) > 1e-3


def test_drop_path_draws_are_replayed_in_the_second_forward():
    """Chunks smaller than the batch: every chunk's second forward reproduces its first exactly,
    and the gradient is that of the same draws taken with a graph (the per-chunk reference)."""
    model, size = tower("vit", drop_path_rate=0.3, proj_drop_rate=0.1)
    a, b = pair(size)
    seen: dict[bool, list[torch.Tensor]] = {False: [], True: []}
    hook = model.backbone.register_forward_hook(lambda m, i, o: seen[torch.is_grad_enabled()].append(o.detach()))
    torch.manual_seed(7)
    loss, got = cached_step(model, a, b, 3)
    rng_after = torch.get_rng_state()
    hook.remove()
    assert len(seen[False]) == len(seen[True]) == 6  # 3 chunks per view, each run twice
    assert all(torch.equal(x, y) for x, y in zip(seen[False], seen[True]))
    torch.manual_seed(7)
    want_loss, want = per_chunk_step(model, a, b, 3)
    assert torch.equal(torch.get_rng_state(), rng_after)  # the replays did not advance the generator
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=0)
    assert worst(want, got) <= FP32_TOL


def test_batch_norm_running_statistics_move_once_per_chunk():
    """A ResNet caches with per-chunk BN statistics (ghost BN): its gradient is the per-chunk
    reference's and its running statistics move as in that reference (each chunk once), not twice."""
    model, size = tower("resnet")
    a, b = pair(size)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    want_loss, want = per_chunk_step(model, a, b, 4)
    want_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    loss, got = cached_step(model, a, b, 4)
    bn = [k for k in want_state if k.endswith("num_batches_tracked")]
    assert bn and all(int(model.state_dict()[k]) == 4 for k in bn)  # 2 chunks x 2 views
    for key, value in want_state.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=0)
    assert worst(want, got) <= FP32_TOL  # exact-zero gradients (zero-init BN gammas) compare absolutely
    full_loss, _ = full_step(model, a, b)
    assert abs(full_loss - loss) > 1e-4  # and it is not the full-batch step: BN mixes the batch


class RunningCentre(nn.Module):
    """Subtracts a running mean that every training forward reads, then updates: a buffer that
    changes the output, so a replay must start from the buffer the first pass started from."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.register_buffer("centre", torch.zeros(width, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        out = y - self.centre
        with torch.no_grad():
            self.centre.mul_(0.5).add_(y.mean(0), alpha=0.5)
        return out


def test_the_replay_starts_from_the_buffers_the_first_pass_started_from():
    torch.manual_seed(0)
    net = RunningCentre(5).double()
    x = torch.randn(9, 5, dtype=torch.float64)

    def chunked(n):
        return torch.cat([net(c) for c in x.split(n)])

    start = net.centre.clone()
    (chunked(3) ** 3).sum().backward()
    want, want_centre = grads(net), net.centre.clone()
    net.zero_grad(set_to_none=True)
    net.centre.copy_(start)
    cache = GradCache()
    cache.backward((cache.embed(net, x, chunk_size=3) ** 3).sum())
    assert worst(want, grads(net)) <= FP64_TOL
    torch.testing.assert_close(net.centre, want_centre, rtol=0, atol=1e-15)


def test_a_grad_scaler_scale_reaches_every_parameter_once():
    model, size = tower("convnext")
    a, b = pair(size)
    _, plain = cached_step(model, a, b, 3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _, scaled = cached_step(model, a, b, 3, scaler)
    assert plain.keys() == scaled.keys()
    assert all(torch.equal(scaled[n], plain[n] * 2.0**10) for n in plain)  # a power of two scales exactly
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler.unscale_(optimizer)
    assert all(torch.equal(p.grad, plain[n]) for n, p in model.named_parameters())


def test_autocast_is_replayed_and_matches_the_full_step():
    """Embedded under bf16 autocast, replayed by a backward called outside it: the second forward
    runs in bf16 again and reproduces the first; the gradient is the full bf16 step's to bf16 rounding."""
    model, size = tower("vit")
    a, b = pair(size)
    dtypes: dict[bool, list] = {False: [], True: []}
    outs: dict[bool, list] = {False: [], True: []}
    fc = model.backbone.blocks[0].mlp.fc1

    def record(m, i, o):
        dtypes[torch.is_grad_enabled()].append(o.dtype)

    hooks = [
        fc.register_forward_hook(record),
        model.backbone.register_forward_hook(lambda m, i, o: outs[torch.is_grad_enabled()].append(o.detach())),
    ]
    model.zero_grad(set_to_none=True)
    cache = GradCache()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fa, fb = cache.embed(model, a, chunk_size=4), cache.embed(model, b, chunk_size=4)
    cache.backward(loss_of(model, fa.float(), fb.float()))
    for h in hooks:
        h.remove()
    got = grads(model)
    assert dtypes[False] == dtypes[True] == [torch.bfloat16] * 4
    assert all(torch.equal(x, y) for x, y in zip(outs[False], outs[True]))
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fa, fb = model(a), model(b)
    loss_of(model, fa.float(), fb.float()).backward()
    assert worst(grads(model), got) <= 0.05  # bf16: 8 mantissa bits, the chunks round differently


def test_several_outputs_and_keyword_arguments():
    """A module returning a tuple; a keyword argument goes to every chunk; a second encoder."""

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU())
            self.a, self.b = nn.Linear(16, 4), nn.Linear(16, 3)

        def forward(self, x, scale=1.0):
            h = self.body(x) * scale
            return self.a(h), self.b(h)

    torch.manual_seed(0)
    net, other = TwoHeads().double(), nn.Linear(6, 4).double()
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 6, dtype=torch.float64)

    def loss_fn(p, q, r):
        return (p @ r.t()).logsumexp(1).mean() + q.square().sum() / 7

    loss_fn(*net(x, scale=2.0), other(y)).backward()
    want = grads(net) | {f"other.{n}": g for n, g in grads(other).items()}
    net.zero_grad(), other.zero_grad()
    cache = GradCache()
    p, q = cache.embed(net, x, chunk_size=4, scale=2.0)
    r = cache.embed(other, y, chunk_size=3)
    cache.backward(loss_fn(p, q, r))
    got = grads(net) | {f"other.{n}": g for n, g in grads(other).items()}
    assert worst(want, got) <= FP64_TOL


def test_misuse_is_a_clear_error():
    net = nn.Linear(4, 2)
    x = torch.randn(6, 4)
    cache = GradCache()
    used, unused = cache.embed(net, x, chunk_size=4), cache.embed(net, x, chunk_size=4)
    with pytest.raises(GradCacheError, match="does not depend on the embeddings of embed\\(\\) call 2 of 2"):
        cache.backward(used.sum())
    with pytest.raises(GradCacheError, match="one row per input row"):
        GradCache().embed(lambda t: t.sum(0), x, chunk_size=2)
    with pytest.raises(GradCacheError, match="before any embed"):
        GradCache().backward(torch.zeros((), requires_grad=True))
    with pytest.raises(GradCacheError, match="first dimension"):
        GradCache().embed(lambda s, t: s + t[:6], x, torch.randn(7, 4), chunk_size=2)
    assert unused.grad is None


def test_split_rows_and_forward_in_chunks():
    rows, chunks = split_rows((torch.arange(7), "tag"), 3)
    assert rows == [3, 3, 1] and [c[0].tolist() for c in chunks] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(c[1] == "tag" for c in chunks)
    assert split_rows((torch.arange(7),), 0)[0] == [7]
    model, size = tower("convnext")
    x = pair(size)[0]
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(forward_in_chunks(model, x, 3), want, rtol=1e-5, atol=1e-6)
    assert not forward_in_chunks(model, x, 3).requires_grad


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun of tests/grad_cache_ddp_worker.py (2 gloo ranks) -> its output folder."""
    from test_distributed import free_port

    out, data = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("fmnist")
    write_fmnist_fixture(data, n_train=64, n_test=16)
    worker = Path(__file__).resolve().parent / "grad_cache_ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    cmd += [f"--master_port={free_port()}", str(worker), str(out), str(data)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_two_gloo_processes_equal_one_process(two_ranks):
    """2 ranks x 4 rows, chunks of 2, embeddings gathered before the loss: the averaged gradient is
    the one-process gradient of the 8-row batch; one all-reduce round per step (as many comm-hook
    calls as a plain DDP step); unequal chunk counts are an error on every rank, not a hang."""
    from grad_cache_ddp_worker import build, global_batch, pair_loss

    model = build()
    a, b = global_batch()
    loss = pair_loss(model(a), model(b))
    loss.backward()
    want = grads(model)
    for r in range(2):
        got = torch.load(two_ranks / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=0)
        assert worst(want, got["grads"]) <= FP32_TOL
        assert got["reductions_cached"] == got["reductions_plain"] >= 1
        assert "different numbers of chunks ([2, 3])" in got["unequal"]


def test_two_gloo_processes_train_mocov3_with_caching_as_without(two_ranks):
    """The MoCo v3 trainer under DDP (backbone and BN heads in DDP wrappers of their own): two
    cached steps leave the weights of two plain steps, to float rounding, on both ranks."""
    for r in range(2):
        plain = torch.load(two_ranks / f"moco0_rank{r}.pt", weights_only=True)
        cached = torch.load(two_ranks / f"moco4_rank{r}.pt", weights_only=True)
        assert plain.keys() == cached.keys()
        weights = [k for k in plain if k.startswith(("encoder_q", "predictor")) and "running" not in k]
        largest = max(plain[k].float().norm().item() for k in weights)
        for key in weights:
            diff, norm = (cached[key] - plain[key]).float().norm().item(), plain[key].float().norm().item()
            assert diff <= FP32_TOL * norm + 1e-6 * largest, (key, diff, norm)
