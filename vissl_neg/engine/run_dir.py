"""What every trainer does with its run directory: start it (config.yaml), or find its
checkpoint and check that it comes from the same config; and stop cleanly on a signal."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

from vissl_neg.config import flatten, resumable_keys, save_config, to_dict
from vissl_neg.errors import TrainingDiverged, UserError
from vissl_neg.runtime import checkpoint as ckpt
from vissl_neg.runtime import distributed as dist


def config_differences(saved: dict, cfg) -> list[str]:
    """'key: saved -> current' for every key that differs and would change the result. The saved
    config is read with today's schema first, so a key added since it was written counts as
    its default."""
    from vissl_neg.config import config_from_dict
    from vissl_neg.errors import ConfigError

    try:
        saved = to_dict(config_from_dict(saved))
    except ConfigError:  # written under another schema: compare what it holds
        pass
    a, b = flatten(saved), flatten(to_dict(cfg))
    skip = resumable_keys(cfg)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)
    ]


def make_output_dir(path: str | Path, what: str) -> Path:
    """Create folder ``path`` if needed and check that a file can be written in it; a folder
    that cannot be (a file in the way, no permission, a read-only file system) is a one-line
    error naming ``what`` (the option that set it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} '{path}' is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(
            f"{what} '{path}' cannot be created or written ({exc.strerror or type(exc).__name__})"
        ) from None
    return path


def open_run_dir(cfg, resume: bool | None, is_main: bool = True) -> dict | None:
    """resume=True: a checkpoint must exist; None: resume if one exists; False: start anew.
    -> the checkpoint state to restore, or None after writing config.yaml for a new run."""
    out_dir = Path(cfg.train.out_dir)
    path = out_dir / ckpt.CHECKPOINT
    exists = path.is_file()
    _same_on_every_rank(dist.all_gather_object(exists), "checkpoint there", path)
    if resume and not exists:
        raise UserError(f"cannot resume: no checkpoint '{path}' (the run directory holds none)")
    make_output_dir(out_dir, "train.out_dir")  # on every rank: a rank that failed alone would leave the others waiting
    if is_main:
        ckpt.remove_stale_temporaries(out_dir)
    if exists and resume is not False:
        state = ckpt.load(path)
        _same_on_every_rank(dist.all_gather_object(state.get("step")), "checkpoint step", path)
        diffs = config_differences(state.get("config", {}), cfg)
        if diffs:
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            raise UserError(
                f"'{path}' comes from a different config ({'; '.join(diffs[:3])}{more}); "
                "use another train.out_dir or the same config"
            )
        return state
    if is_main:
        save_config(cfg, out_dir / "config.yaml")
    return None


def _same_on_every_rank(seen: list, what: str, path: Path) -> None:
    """Under DDP (one value per rank, the same list on every rank): processes that see different
    run directories (node-local folders instead of one shared file system) are a one-line error
    on every rank, never a hang or a silent restart from scratch on some of them."""
    if len(set(seen)) <= 1:
        return
    views = "; ".join(f"rank {r}: {v}" for r, v in enumerate(seen))
    raise UserError(
        f"the processes see different run directories at '{path}' ({what}: {views}); train.out_dir "
        "must be one folder on a file system every node mounts (see docs/cluster.md)"
    )


def install_stop_handlers(on_signal) -> dict:
    """SIGINT / SIGTERM call ``on_signal(name)`` instead of killing; -> the previous handlers."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: on_signal(signal.Signals(signum).name))
        except ValueError:  # not the main thread
            pass
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def diverged(bad_step: int, last_good: int | None, path: Path) -> TrainingDiverged:
    """The error for a NaN/inf loss at 0-based ``bad_step``: the checkpoint ``path`` of step
    ``last_good`` is kept, or, with ``last_good`` None, the run had not written one yet."""
    kept = (
        f"; kept the last good checkpoint '{path}' (step {last_good})"
        if last_good is not None
        else f" before the first checkpoint: no checkpoint was written in '{path.parent}'"
    )
    return TrainingDiverged(f"loss became NaN/inf at step {bad_step + 1}{kept}; try a lower optim.lr or train.amp=off")
