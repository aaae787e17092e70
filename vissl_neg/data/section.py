"""The protocol of a data set's config section.

A data set is a module of ``vissl_neg.data`` holding its section, a dataclass that subclasses
:class:`DataConfig` (the MoCo task's data sets) or :class:`GeoDataConfig` (the cross-view task's),
and one line in its registry (``DATASETS`` / ``GEO_DATASETS`` in ``vissl_neg/data/__init__.py``).
``data.name`` picks the class, as ``loss.name`` picks a loss: a section has its own keys and
defaults, and a key of another data set is refused by name. The section declares:

- its keys, with their choices (``Literal``) and bounds (``vissl_neg.rules``) on the fields;
- ``check()``: ValueError ``"<key> must …"`` for a rule the annotations cannot say;
- ``build(split)``: the data set of ``split`` (``train`` | ``test``);
- ``title``, ``hub_id``, ``eval_split``: how a model card names it and the split it evaluates on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from vissl_neg.rules import NonNegativeInt, PositiveInt


@dataclass
class DataSection:
    """The keys every data set has: its name, where it is, and how the loader reads it."""

    name: str = ""
    root: str = ""
    num_workers: NonNegativeInt = 0
    prefetch_factor: PositiveInt = 2  # batches each worker loads ahead (num_workers > 0)
    persistent_workers: bool = True  # keep workers alive across epochs (num_workers > 0)
    pin_memory: bool = True

    title: ClassVar[str] = ""  # the model card's name of the data set
    hub_id: ClassVar[str | None] = None  # its Hugging Face dataset id, if it has one
    eval_split: ClassVar[str] = "test"  # the split evaluations report on, as the card names it

    @classmethod
    def variants(cls) -> dict[str, type]:
        """{data.name: section class} of the task's data sets."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise ValueError for values outside their domain."""

    def build(self, split: str) -> Any:
        raise NotImplementedError


@dataclass
class DataConfig(DataSection):
    """``data`` of the MoCo task (default: Fashion-MNIST from Debian's package)."""

    name: str = "fashion_mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    subset: NonNegativeInt = 0  # use only the first N training images (0 = all)

    # keys the single data section of earlier versions had for every data set: a saved config
    # of another data set carries them at these values, which meant "unused"
    retired: ClassVar[dict[str, Any]] = {
        "classes": "",
        "decode_size": 256,
        "draft": True,
        "decode_on": "workers",
        "crops": "square",
    }

    @classmethod
    def variants(cls) -> dict[str, type]:
        from vissl_neg.data import DATASETS

        return DATASETS

    @property
    def whole_image_crops(self) -> bool:
        """Each training view's crop box is drawn over the whole image in the loader workers."""
        return False

    @property
    def decodes_on_device(self) -> bool:
        """Workers pass the encoded files and the training device decodes them."""
        return False


@dataclass
class GeoDataConfig(DataSection):
    """``data`` of the cross-view task (default: CVUSA). A cross-view benchmark's section says
    everything the trainer and ``vissl-neg eval-geo`` do differently for it, so neither names a
    data set:

    - its sizes: ``sat_size`` (a field) and :attr:`ground_size` (panorama or drone image);
    - ``build("train")``: the training pairs, a ``PairDataset``-like set of (ground, aerial,
      label, index) whose ``labels`` the batch sampler keys on;
    - :meth:`retrievals`: the evaluations of a split (``vissl_neg.data.pairs.Retrieval``), each
      naming its metric;
    - :meth:`gps`: where GPS neighbours of the training pairs come from, or None;
    - ``sampler`` / ``miner``: the names of its batch sampler and of its hard-negative mining
      (``vissl_neg.geo.sampling.SAMPLERS`` / ``MINERS``; ``miner`` None: no mining);
    - :attr:`monitor_split`: the split evaluated during training; :meth:`protocol`: one line
      naming the benchmark's evaluation protocol, for results and model cards.
    """

    name: str = "cvusa"
    root: str = "data/CVUSA"

    sampler: ClassVar[str] = "neighbours"
    miner: ClassVar[str | None] = "pairs"
    ground_view: ClassVar[str] = "panorama"  # what the ground-side images are
    splits: ClassVar[tuple[str, ...]] = ("train", "test")  # the splits :meth:`retrievals` knows
    retrieval_task: ClassVar[str] = "cross-view retrieval (ground panorama -> satellite)"

    @classmethod
    def variants(cls) -> dict[str, type]:
        from vissl_neg.data import GEO_DATASETS

        return GEO_DATASETS

    @property
    def ground_size(self) -> tuple[int, int]:
        """(height, width) of the ground-side images."""
        raise NotImplementedError

    @property
    def monitor_split(self) -> str:
        """The split evaluated every ``eval.every`` epochs (and at the end)."""
        return self.eval_split

    def retrievals(self, split: str, root: str | None = None) -> list:
        """The evaluations of ``split`` (``root`` overrides data.root)."""
        raise NotImplementedError

    def gps(self, train_set) -> Any:
        """A ``vissl_neg.data.pairs.GpsSource`` for the training pairs, or None (random batches
        until mining starts)."""
        return None

    def protocol(self, split: str) -> str:
        """One line: what an evaluation of ``split`` ranks against what, by which rules."""
        return f"{self.title} {split}"
