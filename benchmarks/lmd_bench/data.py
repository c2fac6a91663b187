"""The benchmark's data: every method trains on the same images, in the same order, with the same flips.

Training images are held in memory as pixels and as the projector's cached latents (both flip views, from the
shared latent cache), so a step costs the same data work for every method. Batches come from seeded epoch
permutations, and each sample's flip is drawn from one generator whether pixels or latents are used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file

from diffusers_lmd.data import DataConfig, random_flip_batch, stack_images
from diffusers_lmd.projector import Projector
from diffusers_lmd.training.latent_cache import (
    CachedLatentDataset,
    build_latent_cache,
    cache_fingerprint,
    data_identity,
    latents_for_batch,
    projector_fingerprint,
)


@dataclass
class BenchmarkData:
    """Training pixels and latents, and the held-out images, as tensors.

    Args:
        train_images: ``N x 3 x R x R`` in ``[-1, 1]``, never flipped.
        eval_images: ``M x 3 x R x R`` held-out images.
        train_latents / train_latents_flipped: ``N x C x h x w`` normalised latents of the images and their
            mirror images (``None`` when no latent method runs).
    """

    train_images: torch.Tensor
    eval_images: torch.Tensor
    train_latents: torch.Tensor | None = None
    train_latents_flipped: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.train_images.shape[0]

    def train_probe(self) -> torch.Tensor:
        """As many training images as there are held-out ones, evenly spaced: scored like the held-out set, they
        tell memorising the training photos apart from learning what transfers to a new one."""
        count = min(len(self), self.eval_images.shape[0])
        indices = torch.linspace(0, len(self) - 1, count).round().long().to(self.train_images.device)
        return self.train_images[indices]

    def to(self, device: torch.device | str) -> BenchmarkData:
        move = {k: (v.to(device) if v is not None else None) for k, v in vars(self).items()}
        return BenchmarkData(**move)

    def batch(self, space: str, indices: torch.Tensor, flip_generator: torch.Generator) -> torch.Tensor:
        """The batch ``indices`` in ``space`` (``"pixel"`` or ``"latent"``), each sample flipped with p = 1/2."""
        if space == "pixel":
            return random_flip_batch(self.train_images[indices], flip_generator)
        if space != "latent":
            raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}.")
        if self.train_latents is None or self.train_latents_flipped is None:
            raise ValueError("This BenchmarkData holds no cached latents: build it with a projector.")
        cached = {"latents": self.train_latents[indices], "latents_flipped": self.train_latents_flipped[indices]}
        return latents_for_batch(cached, None, random_flip=True, generator=flip_generator)

    def save(self, path: str) -> None:
        """Write every tensor to one safetensors file."""
        save_file({k: v.contiguous().cpu() for k, v in vars(self).items() if v is not None}, path)

    @classmethod
    def load(cls, path: str) -> BenchmarkData:
        return cls(**load_file(path))


class EpochSampler:
    """Batches of indices from seeded epoch permutations (the incomplete last batch of an epoch is dropped)."""

    def __init__(self, num_items: int, batch_size: int, generator: torch.Generator):
        if not 1 <= batch_size <= num_items:
            raise ValueError(f"batch_size must be between 1 and the {num_items} training images, got {batch_size}.")
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self._order = torch.empty(0, dtype=torch.long)
        self._next = 0

    def __next__(self) -> torch.Tensor:
        if self._next + self.batch_size > len(self._order):
            self._order = torch.randperm(self.num_items, generator=self.generator)
            self._next = 0
        indices = self._order[self._next : self._next + self.batch_size]
        self._next += self.batch_size
        return indices


def build_benchmark_data(
    data: DataConfig,
    train_dataset: torch.utils.data.Dataset,
    eval_dataset: torch.utils.data.Dataset,
    vae: Projector,
    cache_dir: str,
    accelerator,
    encode_batch_size: int = 64,
) -> tuple[BenchmarkData, dict]:
    """Stack the images and encode the training set once through the shared latent cache.

    Returns the data and ``{"cache_s", "cache_reused", "cache_path"}``: the one-time encoding cost.
    """
    start = time.perf_counter()
    key = cache_fingerprint(projector_fingerprint(vae), data_identity(data, train_dataset), True)
    info = build_latent_cache(
        accelerator, vae, train_dataset, key, cache_dir=cache_dir, batch_size=encode_batch_size, flips=True
    )
    cached = CachedLatentDataset(info.path)
    everything = cached.__getitems__(list(range(len(cached))))
    data = BenchmarkData(
        train_images=stack_images(train_dataset),
        eval_images=stack_images(eval_dataset),
        train_latents=everything["latents"],
        train_latents_flipped=everything["latents_flipped"],
    )
    cost = {"cache_s": info.seconds, "cache_reused": info.reused, "cache_path": info.path}
    cost["data_s"] = time.perf_counter() - start
    return data, cost
