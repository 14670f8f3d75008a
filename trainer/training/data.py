"""Aligned face crops as a PyTorch dataset, and a sampler that can resume mid-epoch.

Augmentation is a horizontal flip whose choice is a hash of (seed, epoch, index), not a draw
from a global random generator, so an interrupted run that resumes sees the same flips as an
uninterrupted one.  The sampler is a :class:`DistributedSampler` (per-epoch permutation from
``seed + epoch``, each rank its share) that can skip the samples already trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from facegate.errors import FacegateError
from trainer.datasets.faces import read_rgb


def flip_decision(seed: int, epoch: int, index: int) -> bool:
    """Whether sample ``index`` is mirrored in ``epoch`` (half of them, deterministically)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=1).digest()
    return digest[0] & 1 == 1


class FaceCrops(Dataset[tuple[torch.Tensor, int]]):
    """(CHW float32 RGB 0..255 tensor, class index) per aligned crop file."""

    def __init__(
        self, paths: Sequence[Path], labels: Sequence[int], flip: bool = False, seed: int = 0
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths = list(paths)
        self.labels = list(labels)
        self.flip = flip
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose flips ``__getitem__`` applies."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray:
        """The crop as an (H, W, 3) uint8 RGB array, without augmentation."""
        image = read_rgb(self.paths[index])
        if image is None:
            raise FacegateError(f"cannot decode training crop {self.paths[index]}")
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index)
        if self.flip and flip_decision(self.seed, self.epoch, index):
            image = image[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return tensor, self.labels[index]


class ResumableSampler(DistributedSampler[int]):
    """A distributed sampler that drops whole epochs' remainder and can start mid-epoch."""

    def __init__(
        self, dataset: Dataset[tuple[torch.Tensor, int]], num_replicas: int, rank: int, seed: int
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def start_at(self, epoch: int, skip: int) -> None:
        """Iterate ``epoch``'s permutation from its ``skip``-th sample of this rank."""
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)
