"""Every test under tests/cuda is marked ``cuda`` and skips, with the reason, where CUDA is absent
(CI, the CPU machines): ``python -m pytest -m cuda`` reports skips there, not errors.
``VISSL_NEG_CUDA_SUITE_DEVICE=cpu`` runs the suite's logic on the CPU instead (a dry run of the
tests themselves before GPU time is spent; what needs CUDA then checks nothing)."""

import pytest
import torch
from cuda_helpers import DEVICE


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.cuda)
            if DEVICE == "cuda" and not torch.cuda.is_available():
                item.add_marker(skip)
