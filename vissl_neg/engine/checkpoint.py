"""Atomic checkpoints: written to a temporary file, flushed, then renamed over the old one,
so a kill at any instant leaves either the previous or the new checkpoint, never half of one."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from vissl_neg.errors import UserError

CHECKPOINT = "last.ckpt"


def save_atomic(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoints a killed process left behind (never the real one)."""
    for tmp in Path(run_dir).glob(CHECKPOINT + ".*.tmp"):
        tmp.unlink(missing_ok=True)


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at '{path}'") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"checkpoint '{path}' cannot be read ({exc.__class__.__name__})") from None


USE_TOOLS = {"moco": "tools/knn.py or tools/linear_probe.py", "geo": "tools/eval_geo.py"}


def load_run(run_dir: str | Path, task: str | None = "moco"):
    """-> (validated config, checkpoint state) of a run directory's ``last.ckpt``; a run of
    another ``task`` (moco | geo; None = any) is a one-line error."""
    from vissl_neg.config import config_from_dict

    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"'{run_dir}' holds no checkpoint ({CHECKPOINT}); is it a run directory?")
    state = load(path)
    cfg = config_from_dict(state["config"])
    found = getattr(cfg, "task", "moco")
    if task is not None and found != task:
        raise UserError(f"'{run_dir}' is a {found} run, not a {task} run; evaluate it with {USE_TOOLS[found]}")
    return cfg, state


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
