"""Deterministic training batches: which samples a step takes and how it augments them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from ..presets import input_preset
from ..transforms import normalize_and_pad
from .augment import AugmentConfig, augment, targets_from_classes
from .data import DatasetError, Sample
from .matcher import Target

CACHE_SAMPLES = 256  # decoded samples kept in memory, least recently used dropped first


class TrainBatches:
    """Deterministic batches: epoch ``e`` visits the samples in the order of a
    permutation seeded by ``(seed, e)``; step ``s`` augments with ``(seed, s)``."""

    def __init__(
        self, samples: Sequence[Sample], batch_size: int, config: AugmentConfig, seed: int
    ) -> None:
        self.samples, self.batch_size, self.config, self.seed = samples, batch_size, config, seed
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.preset = input_preset()

    def _load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        if sample.key in self._cache:
            self._cache.move_to_end(sample.key)
            return self._cache[sample.key]
        loaded = sample.load()
        self._cache[sample.key] = loaded
        if len(self._cache) > CACHE_SAMPLES:
            self._cache.popitem(last=False)
        return loaded

    def indices(self, step: int) -> list[int]:
        n = len(self.samples)
        out = []
        for k in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, position = divmod(k, n)
            out.append(int(np.random.default_rng([self.seed, epoch]).permutation(n)[position]))
        return out

    def __call__(self, step: int, device: torch.device) -> tuple[torch.Tensor, list[Target]]:
        rng = np.random.default_rng([self.seed, step, 1])
        images, targets = [], []
        for index in self.indices(step):
            sample = self.samples[index]
            try:
                image, classes = augment(*self._load(sample), rng, self.config)
            except DatasetError:
                raise
            except ValueError as error:
                raise sample.unusable(error) from error
            images.append(normalize_and_pad(image, self.preset)[0])  # crops: no padding
            labels, masks = targets_from_classes(classes)
            targets.append(
                Target(torch.from_numpy(labels).to(device), torch.from_numpy(masks).to(device))
            )
        return torch.stack(images).to(device), targets
