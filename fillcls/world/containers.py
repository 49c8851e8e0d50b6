"""The containers of the CCM dataset and the paper's splits: ids, names, opacity, C-CCM counts.

The one definition shared by the renderer (:mod:`fillcls.world.render`), the camera and the
trainer; ROS-free and torch-free.
"""

from __future__ import annotations

from typing import Iterable

#: Container id -> name, as in the CCM dataset.
CONTAINER_NAMES: dict[str, str] = {
    "C1": "red cup",
    "C2": "small white cup",
    "C3": "small transparent cup",
    "C4": "green glass",
    "C5": "wine glass",
    "C6": "champagne flute",
    "C7": "beer cup",
    "C8": "cocktail glass",
}
#: Opaque containers (their crops are always labelled ``unknown``).
OPAQUE: frozenset[str] = frozenset({"C1", "C2"})
#: Test containers of each split of the paper (Fig. 4); the other containers are the train set.
SPLITS: dict[str, tuple[str, ...]] = {
    "S1": ("C6", "C7", "C8"),
    "S2": ("C5", "C6", "C8"),
    "S3": ("C1", "C4", "C7"),
}
#: Number of C-CCM crops per container (Fig. 4 of the paper); they sum to 10,216.
CCM_CONTAINER_COUNTS: dict[str, int] = {
    "C1": 1623, "C2": 1639, "C3": 1290, "C4": 1566, "C5": 1550, "C6": 1059, "C7": 787, "C8": 702,
}
#: Number of C-CCM crops per class (``unknown`` = the two opaque containers).
CCM_CLASS_COUNTS: dict[str, int] = {"empty": 989, "half": 3094, "full": 2871, "unknown": 3262}


def split_containers(split: str, containers: Iterable[str] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(train ids, test ids)`` of ``split`` (``S1`` / ``S2`` / ``S3``) among ``containers`` (C1..C8)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    test = SPLITS[split]
    pool = list(containers) if containers is not None else list(CONTAINER_NAMES)
    return tuple(c for c in pool if c not in test), tuple(c for c in pool if c in test)
