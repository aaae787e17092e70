"""A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: records the aten operations
that, on a GPU, make the host wait for the device — a value read back (``.item()``, ``bool()``
of a tensor in an ``if``), an output whose size depends on the data (``nonzero``, boolean
indexing, ``unique``, ``masked_select``, ``repeat_interleave`` without ``output_size``) or a
tensor built from host data (``torch.tensor([...])``: a host-to-device copy on CUDA)."""

from __future__ import annotations

import collections
import contextlib
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCING = {
    "_local_scalar_dense",
    "is_nonzero",
    "equal",
    "nonzero",
    "masked_select",
    "masked_scatter",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "lift_fresh",
    "lift_fresh_copy",
    "allclose",
}


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: dict[str, int] = collections.Counter()
        self.first: dict[str, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        syncs = name in SYNCING or (
            name == "repeat_interleave"
            and func._overloadname in ("Tensor", "self_Tensor")
            and (kwargs or {}).get("output_size") is None
        )
        if name in ("index", "index_put", "index_put_") and len(args) > 1:
            syncs = syncs or any(getattr(i, "dtype", None) in (torch.bool, torch.uint8) for i in args[1] or ())
            name = f"{name} (boolean mask)" if syncs else name
        if syncs:
            self.ops[name] += 1
            self.first.setdefault(name, "".join(traceback.format_stack(limit=14)[:-2]))
        return func(*args, **(kwargs or {}))

    def report(self) -> str:
        return "\n".join(f"{name} x{n}, first at:\n{self.first[name]}" for name, n in self.ops.items())


@contextlib.contextmanager
def host_reads():
    """``with host_reads() as reads: ...`` then ``reads.ops`` maps each syncing op to its count."""
    mode = HostReads()
    with mode:
        yield mode
