"""tools/train.py with one fault injected at a chosen step, for the interrupted-run tests: run by
torchrun from test_cluster.py (the fault only in torchrun's first launch,
TORCHELASTIC_RESTART_COUNT=0, so a restarted group trains undisturbed), or by plain python (one
process, rank 0) from test_resume.py and tests/cuda/test_cuda_runs.py.

    VISSL_NEG_KILL_AT=RANK:STEP    that rank SIGKILLs itself as it starts the batch after STEP steps
    VISSL_NEG_PAUSE_AT=RANK:STEP:FILE  that rank writes FILE there and waits (60 s at most) for a stop signal

    torchrun --nproc_per_node=2 tests/fault_train.py [tools/train.py arguments...]
    python tests/fault_train.py [tools/train.py arguments...]
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]

from vissl_neg.engine.trainer import Trainer  # noqa: E402
from vissl_neg.runtime import distributed as dist  # noqa: E402

import helpers  # noqa: E402,F401  (one thread per process)


def _fault(name: str) -> list[str] | None:
    spec = os.environ.get(name)
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    return spec.split(":", 2)


KILL, PAUSE = _fault("VISSL_NEG_KILL_AT"), _fault("VISSL_NEG_PAUSE_AT")
train_batch = Trainer.train_batch


def faulty_train_batch(self, batch, diagnose):
    if KILL and dist.rank() == int(KILL[0]) and self.step == int(KILL[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    if PAUSE and dist.rank() == int(PAUSE[0]) and self.step == int(PAUSE[1]):
        Path(PAUSE[2]).write_text(str(self.step))
        deadline = time.monotonic() + 60
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(0.05)
    return train_batch(self, batch, diagnose)


Trainer.train_batch = faulty_train_batch
sys.argv = [str(TESTS.parent / "tools" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
