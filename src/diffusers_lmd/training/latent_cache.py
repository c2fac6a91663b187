"""Encode the training images once with the frozen projector and keep the latents on disk.

On an H200, encoding an image costs ~4.6x an LMD training step at mask 0.75 (method.md §6), so re-encoding every
epoch would waste most of the run. The cache is a ``datasets`` table (memory-mapped Arrow) under
``{cache_dir}/{fingerprint}``, where the fingerprint hashes the projector's weights and config (its latent
scale and shift included) and the data's identity and preprocessing: any change gives a new table, the same
inputs reuse it. Random flips stay exact: both ``E(x)`` and ``E(flip(x))`` are cached and each step picks one
per sample with the same draws as flipping pixels would use. Every process encodes a shard; the table is
written to a hidden folder and renamed when complete, so an interrupted build is never read. Class labels and
captions of a conditional run travel in the same table (``class_labels``, ``caption``); the captions' text
embeddings have their own table (:mod:`~diffusers_lmd.training.text_cache`), one row per distinct caption.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, fields

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import DataConfig, random_flip_mask
from ..data.quiet import quiet_datasets
from ..projector import Projector, encode_images

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
META_FILE = "lmd_latent_cache.json"
# Data options that do not change which training images are produced, or how; the conditioning columns count only
# when set, so unconditional caches keep their key.
_NOT_IDENTITY = {"dataloader_num_workers", "random_flip"}
_CONDITIONS = ("label_column", "caption_column")


def default_cache_dir() -> str:
    """``$HF_DATASETS_CACHE/diffusers_lmd_latents``: beside the datasets' own cache, shared by every run."""
    return os.path.join(datasets.config.HF_DATASETS_CACHE, "diffusers_lmd_latents")


def projector_fingerprint(vae: Projector) -> str:
    """SHA-256 of the projector's class, config (scale and shift included) and every weight."""
    digest = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if k not in ("_name_or_path", "_diffusers_version")}
    digest.update(type(vae).__name__.encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_identity(data: DataConfig, dataset: torch.utils.data.Dataset) -> dict:
    """What makes the training images what they are: every data option but workers and flips, the size, and the
    Arrow fingerprint of the underlying ``datasets`` table when there is one (it changes with the files). The
    conditioning columns count only when set, so an unconditional run keeps the key it had before they existed."""
    names = [f.name for f in fields(DataConfig) if f.name not in _NOT_IDENTITY | set(_CONDITIONS)]
    identity = {name: getattr(data, name) for name in names}
    for name in _CONDITIONS:
        if getattr(data, name):
            identity[name] = getattr(data, name)
    identity["num_images"] = len(dataset)
    table = getattr(dataset, "dataset", None)
    if isinstance(table, datasets.Dataset):
        identity["arrow_fingerprint"] = table._fingerprint
    return identity


def cache_fingerprint(projector_hash: str, identity: dict, flips: bool) -> str:
    """The cache key: projector, data identity, and whether flipped views are stored."""
    key = {"version": CACHE_FORMAT_VERSION, "projector": projector_hash, "data": identity, "flips": flips}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class LatentCacheInfo:
    """Where the cache lives and how it was obtained."""

    path: str
    fingerprint: str
    reused: bool
    seconds: float


CONDITION_FEATURES = {"class_labels": datasets.Value("int64"), "caption": datasets.Value("string")}


def _to_table(
    indices: list[int], latents: list[np.ndarray], flipped: list[np.ndarray] | None, conditions: dict[str, list]
) -> datasets.Dataset:
    """One chunk of the cache as a ``datasets`` table with fixed-shape float32 latent columns (and the images'
    ``class_labels`` / ``caption`` when the dataset yields them)."""
    columns = {"index": indices, "latents": np.concatenate(latents)}
    if flipped is not None:
        columns["latents_flipped"] = np.concatenate(flipped)
    array = datasets.Array3D(shape=columns["latents"].shape[1:], dtype="float32")
    features = {"index": datasets.Value("int64"), **{k: array for k in columns if k != "index"}}
    columns.update(conditions)
    features.update({k: CONDITION_FEATURES[k] for k in conditions})
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _encode_shard(vae, dataset, indices, out_dir, batch_size, flips, num_workers, chunk_size, show_progress) -> None:
    """Encode ``dataset[indices]`` (and their mirror images) into chunk tables under ``out_dir``."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers
    )
    done, chunk = 0, 0
    latents, flipped, conditions = [], ([] if flips else None), {}
    batches = tqdm(loader, desc="Encoding the latent cache", unit="batch", disable=not show_progress)
    for i, batch in enumerate(batches):
        pixels = batch["pixel_values"]
        encoded = encode_images(vae, torch.cat([pixels, pixels.flip(-1)]) if flips else pixels).float().cpu().numpy()
        latents.append(encoded[: len(pixels)])
        if flips:
            flipped.append(encoded[len(pixels) :])
        for name in CONDITION_FEATURES.keys() & batch.keys():
            values = batch[name]
            conditions.setdefault(name, []).extend(values.tolist() if isinstance(values, torch.Tensor) else values)
        pending = sum(len(x) for x in latents)
        if pending >= chunk_size or i == len(loader) - 1:
            _to_table(list(indices[done : done + pending]), latents, flipped, conditions).save_to_disk(
                os.path.join(out_dir, f"chunk-{chunk:05d}")
            )
            done, chunk = done + pending, chunk + 1
            latents, flipped, conditions = [], ([] if flips else None), {}


def build_latent_cache(
    accelerator,
    vae: Projector,
    dataset: torch.utils.data.Dataset,
    fingerprint: str,
    cache_dir: str | None = None,
    batch_size: int = 64,
    flips: bool = True,
    num_workers: int = 0,
    chunk_size: int = 8192,
) -> LatentCacheInfo:
    """Return the cache for ``fingerprint``, encoding ``dataset`` first if no complete table exists.

    Call on every process: each encodes ``indices[rank::world]`` on its device, the main process joins the
    shards in index order and publishes the table with an atomic rename.
    """
    start = time.perf_counter()
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, fingerprint)
    if os.path.isfile(os.path.join(path, META_FILE)):
        logger.info("Reusing the latent cache %s", path)
        return LatentCacheInfo(path, fingerprint, True, time.perf_counter() - start)
    tmp = os.path.join(cache_dir, f".{fingerprint}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    rank, world = accelerator.process_index, accelerator.num_processes
    shard_dir = os.path.join(tmp, f"shard-{rank}")
    indices = range(rank, len(dataset), world)
    logger.info("Encoding %d images into the latent cache %s (once per projector and data)", len(dataset), path)
    with quiet_datasets():
        show_progress = accelerator.is_local_main_process
        _encode_shard(vae, dataset, indices, shard_dir, batch_size, flips, num_workers, chunk_size, show_progress)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        chunks = sorted(os.path.join(root, d) for root, dirs, _ in os.walk(tmp) for d in dirs if d.startswith("chunk-"))
        table = datasets.concatenate_datasets([datasets.load_from_disk(c) for c in chunks])
        table = table.select(np.argsort(np.asarray(table["index"]), kind="stable"))
        with quiet_datasets():
            table.save_to_disk(os.path.join(tmp, "table"))
        with open(os.path.join(tmp, "table", META_FILE), "w") as f:
            json.dump({"fingerprint": fingerprint, "num_images": len(table), "flips": flips}, f)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(os.path.join(tmp, "table"), path)
        shutil.rmtree(tmp)
        logger.info("Wrote the latent cache %s (%d images)", path, len(table))
    accelerator.wait_for_everyone()
    return LatentCacheInfo(path, fingerprint, False, time.perf_counter() - start)


class CachedLatentDataset(torch.utils.data.Dataset):
    """Items ``{"latents": C x h x w}`` (and ``"latents_flipped"``, ``"class_labels"``, ``"caption"`` when cached)
    read from a cache table, a batch per read.

    Use with :func:`collate_cached` (``DataLoader(..., collate_fn=collate_cached)``).
    """

    def __init__(self, path: str):
        table = datasets.load_from_disk(path)
        names = ("latents", "latents_flipped", *CONDITION_FEATURES)
        self.columns = [c for c in names if c in table.column_names]
        self.table = table.with_format("torch", columns=self.columns)

    @property
    def has_flips(self) -> bool:
        return "latents_flipped" in self.columns

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.table[int(index)]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.table[list(indices)]


def collate_cached(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CachedLatentDataset`` already returns whole batches."""
    return batch


def latents_for_batch(
    batch: dict[str, torch.Tensor], vae: Projector | None, random_flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Normalised latents for a training batch, cached (``"latents"``) or encoded now (``"pixel_values"``).

    With ``random_flip``, each sample is flipped with probability 1/2 using the same draw on both paths, so a
    cached run and an online run see the same views.
    """
    cached = "latents" in batch
    first = batch["latents"] if cached else batch["pixel_values"]
    flip = random_flip_mask(first.shape[0], generator, device=first.device) if random_flip else None
    if cached:
        if flip is None:
            return batch["latents"]
        if "latents_flipped" not in batch:
            raise ValueError("--random_flip needs a latent cache with flipped views; rebuild it with flips.")
        return torch.where(flip[:, None, None, None], batch["latents_flipped"], batch["latents"])
    if vae is None:
        raise ValueError("Encoding pixel batches online needs the projector (vae).")
    pixels = batch["pixel_values"]
    if flip is not None:
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    return encode_images(vae, pixels)
