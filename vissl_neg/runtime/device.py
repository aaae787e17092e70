"""Where and in what precision training runs: the device, the autocast dtype, seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from vissl_neg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available here; use train.device=cpu or auto")
    return torch.device(name)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """-> autocast dtype or None. 'auto' is bf16 on CUDA where supported, else fp16; off on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        if mode in ("auto", "bf16") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if mode == "fp16":
        print("note: fp16 autocast needs CUDA; training in fp32 on the CPU", flush=True)
        return None
    return torch.bfloat16  # bf16 autocast works on CPU


def use_fused(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Fused (one-kernel) optimizer steps on CUDA, the for-each path elsewhere. With fp16 the
    GradScaler hands a fused optimizer its inf check as a tensor; any other optimizer makes
    the scaler read it on the host every step. Call again after ``load_state_dict``, which
    restores the flag the checkpoint was written with.

    SGD's momentum buffers are created as zeros up front (the same first update, buf = grad):
    fused SGD otherwise allocates them uninitialised and fills them in its first step, which
    the GradScaler skips when fp16 gradients overflow, leaving garbage (NaN) momentum."""
    fused = device.type == "cuda"
    for group in optimizer.param_groups:
        group["fused"] = fused
        if fused:
            group["foreach"] = None
            if isinstance(optimizer, torch.optim.SGD) and group["momentum"]:
                for p in group["params"]:
                    optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
    optimizer._step_supports_amp_scaling = fused


def use_deterministic_kernels() -> None:
    """Deterministic cuDNN / cuBLAS / index kernels (``train.deterministic``). cuBLAS needs its
    workspace setting before its first call; ops without a deterministic kernel warn."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
