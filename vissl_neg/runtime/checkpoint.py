"""Atomic checkpoints: written to a temporary file, flushed, then renamed over the old one,
so a kill at any instant leaves either the previous or the new checkpoint, never half of one.
A checkpoint holds only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: a file that would run code when unpickled is refused."""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from vissl_neg.errors import UserError

CHECKPOINT = "last.ckpt"
BEST = "best.ckpt"  # the cross-view task's eval.keep_best weights


def current_umask() -> int:
    """The process umask, read from /proc where it can be (os.umask can only read it by
    setting it, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def save_atomic(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; a plain open() would not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete half-written checkpoints a killed process left behind (never the real one)."""
    for tmp in Path(run_dir).glob(CHECKPOINT + ".*.tmp"):
        tmp.unlink(missing_ok=True)


# torch.save's format before torch 1.6: a pickle (protocol 2) of this magic number, then the data
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def not_a_checkpoint(path: Path) -> str | None:
    """Why the file at ``path`` is not in a format ``torch.save`` writes (a zip archive holding
    a ``data.pkl``, or the legacy pickle stream), or None if it is."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if not head:
        return "the file is empty"
    if head.startswith(LEGACY_MAGIC):
        return None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "a damaged zip archive"
        return (
            None if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names) else "a zip archive without data.pkl"
        )
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive cut short: truncated, or still being written"
    return "text, not a zip archive" if _looks_like_text(path) else "not a zip archive"


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as f:
        sample = f.read(4096)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(sample) - 4 and b"\0" not in sample  # a character cut at the sample's end
    return b"\0" not in sample


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's state. A file ``torch.save`` did not write (text, another archive, a
    truncated download) is refused as not a checkpoint; one that holds anything but tensors and
    plain values is refused unread (nothing in it runs)."""
    path = Path(path)
    try:
        why = not_a_checkpoint(path)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at '{path}'") from None
    except OSError as exc:
        raise UserError(f"checkpoint '{path}' cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    if why:
        raise UserError(f"'{path}' is not a checkpoint ({why})")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None and "Unsupported operand" in str(exc):  # not a pickle stream torch.save writes
            raise UserError(f"'{path}' is not a checkpoint (its data.pkl is no pickle torch.save writes)") from None
        what = f" ({found.group(1)})" if found else ""
        raise UserError(
            f"checkpoint '{path}' contains objects other than tensors and plain values{what}, so it was not loaded"
        ) from None
    except EOFError:
        raise UserError(f"'{path}' is not a complete checkpoint (it ends early: truncated?)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"checkpoint '{path}' cannot be read ({exc.__class__.__name__})") from None


def rng_state() -> dict:
    """Python's, numpy's, torch's (and CUDA's) generator states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
