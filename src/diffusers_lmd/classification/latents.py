"""A labelled split as cached projector latents: what fine-tuning trains on instead of pixels."""

from __future__ import annotations

from ..data import DataConfig
from ..data.labelled import LabelledImageDataset, TensorDictDataset
from ..training.latent_cache import (
    CachedLatentDataset,
    LatentCacheInfo,
    build_latent_cache,
    cache_fingerprint,
    data_identity,
    projector_fingerprint,
)


def cache_labelled_latents(
    accelerator,
    vae,
    dataset: LabelledImageDataset,
    data: DataConfig,
    split: str,
    cache_dir: str | None = None,
    batch_size: int = 64,
) -> tuple[TensorDictDataset, LatentCacheInfo]:
    """``{"latents", "labels"}`` rows for a labelled split, encoded once through the shared latent cache.

    Fine-tuning reads latents, not pixels: the projector's encoder costs several training steps per image. The
    cache key covers the projector, the data options, the split's table and ``split``; no flipped views are stored.
    Call on every process (each encodes a shard); the latents are then held in memory.
    """
    identity = {**data_identity(data, dataset), "split": split}
    key = cache_fingerprint(projector_fingerprint(vae), identity, flips=False)
    info = build_latent_cache(accelerator, vae, dataset, key, cache_dir=cache_dir, batch_size=batch_size, flips=False)
    cached = CachedLatentDataset(info.path)
    latents = cached.__getitems__(list(range(len(cached))))["latents"]
    return TensorDictDataset(latents=latents, labels=dataset.labels), info
