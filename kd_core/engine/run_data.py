"""A run's data on the device, and the batches that walk it in lockstep for every seed.

`RunData` holds the training images some seed uses (normalised once, on the run's device), their labels, the
teacher's cached logits (and features, for the feature methods) and, per seed, which of them are its labelled
images and which its transfer (unlabelled) images; plus the fixed live-validation subset behind the curves.
`Batches` deals index batches for every seed at once ([G, B]): seed i reshuffles with its own generator, so
its batches never depend on how many seeds run. `kd_core.engine.loop` gathers a step's images from both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset, stratified_subset, student_indices

LIVE_VALIDATION = 500  # validation images behind the live curves (class-stratified, fixed): 12 evaluations of
# 500 images slowed the default run by about 10 % (measured, README); 2,000 images cost 50-80 %


class Batches:
    """Index batches for every seed in lockstep: seed i reshuffles positions 0 … n − 1 with its own
    generator (seeded with seed_i + salt), so seed i's batches never depend on how many seeds run."""

    def __init__(self, n: int, seeds: Sequence[int], salt: int = 0):
        self.n = n
        self.generators = [torch.Generator().manual_seed(seed + salt) for seed in seeds]
        self.pending = torch.empty(len(seeds), 0, dtype=torch.int64)  # what `take` has left of a pass

    def shuffled(self) -> torch.Tensor:
        return torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])  # [G, n]

    def epoch(self, batch: int) -> list[torch.Tensor]:
        """One pass as [G, b] chunks; a last chunk of one image is dropped (it would break BatchNorm
        students; it is reshuffled next epoch)."""
        order = self.shuffled()
        return [chunk for chunk in order.split(batch, dim=1) if chunk.shape[1] > 1 or self.n == 1]

    def take(self, batch: int) -> torch.Tensor:
        """The next [G, batch] positions of an endless stream of passes."""
        while self.pending.shape[1] < batch:
            self.pending = torch.cat([self.pending, self.shuffled()], dim=1)
        out, self.pending = self.pending[:, :batch], self.pending[:, batch:]
        return out


def epoch_steps(n: int, batch: int) -> int:
    """Steps in one `Batches.epoch`."""
    return sum(1 for first in range(0, n, batch) if min(batch, n - first) > 1 or n == 1)


class RunData:
    """A run's images, labels and teacher logits on the device, and which of them each seed trains on.

    Only the training images some seed uses are normalised and moved (`used`); `labelled` and `transfer`
    hold, per seed, positions into them. Labels of transfer images are never read.
    """

    def __init__(self, cfg: RunConfig, dataset: Dataset, train_logits: torch.Tensor, seeds: Sequence[int],
                 device: torch.device):
        validation = dataset.validation_index
        labelled = [student_indices(dataset.train_labels, train_size=cfg.train_size, hide_class=cfg.hide_class,
                                    seed=seed, exclude=validation) for seed in seeds]
        if len(labelled[0]) == 0:
            raise ValueError("no training images left after train_size / hide_class")
        transfer = [self.transfer_indices(cfg, dataset, own, seed) for own, seed in zip(labelled, seeds, strict=True)]
        self.used = torch.cat([*labelled, *transfer]).unique()  # sorted
        self.labelled = torch.stack([torch.searchsorted(self.used, own) for own in labelled])  # [G, n]
        self.transfer = torch.stack([torch.searchsorted(self.used, own) for own in transfer])  # [G, u]
        # uint8 [N, C, H, W], normalised per batch (the same values as normalising once): a quarter of the memory
        # of float32, which for a full-data run was 172 MB per run in flight
        self.images = dataset.train_images[self.used].to(device)
        self.labels = dataset.train_labels[self.used].to(device)
        self.teacher = train_logits[self.used].to(device)  # [N, K], ignored when augmenting
        self.teacher_features: torch.Tensor | None = None  # [N, F_t] when a role learns from features
        live = stratified_subset(dataset.train_labels, validation, LIVE_VALIDATION, seed=0)
        self.live_inputs = dataset.normalize(dataset.train_images[live].to(device))
        self.live_labels = dataset.train_labels[live].to(device)

    @staticmethod
    def transfer_indices(cfg: RunConfig, dataset: Dataset, labelled: torch.Tensor, seed: int) -> torch.Tensor:
        """`cfg.unlabeled` training images outside the validation split and `labelled`, drawn with `seed`
        (leaving out the hidden class unless `cfg.unlabeled_hidden`)."""
        if not cfg.unlabeled:
            return torch.empty(0, dtype=torch.int64)
        pool = torch.ones(len(dataset.train_labels), dtype=torch.bool)
        pool[dataset.validation_index] = False
        pool[labelled] = False
        if cfg.hide_class is not None and not cfg.unlabeled_hidden:
            pool[dataset.train_labels == cfg.hide_class] = False
        candidates = pool.nonzero().flatten()
        if cfg.unlabeled > len(candidates):
            raise ValueError(f"unlabeled must be at most {len(candidates):,} here (the training images outside "
                             f"the validation split and the labelled ones); got {cfg.unlabeled:,}")
        generator = torch.Generator().manual_seed(seed + 2**32)
        return candidates[torch.randperm(len(candidates), generator=generator)[:cfg.unlabeled]].sort().values
