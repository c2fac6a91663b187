"""The latent cache: exact flips, reuse by fingerprint, invalidation, atomic builds, and the same training."""

import argparse
import os
import time

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from diffusers_lmd import encode_images
from diffusers_lmd.data import build_datasets
from diffusers_lmd.training import latent_cache, load_projector, read_jsonl, train_lmd
from diffusers_lmd.training.args import add_data_args, data_config, parse_lmd_args
from diffusers_lmd.training.latent_cache import (
    CachedLatentDataset,
    build_latent_cache,
    cache_fingerprint,
    collate_cached,
    data_identity,
    latents_for_batch,
    projector_fingerprint,
)

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_accelerate_state")


def data_args(*argv):
    return data_config(
        add_data_args(argparse.ArgumentParser()).parse_args(
            ["--resolution", "16", "--demo_crops_per_photo", "3", "--demo_eval_crops", "2", *argv]
        )
    )


@pytest.fixture
def vae(tiny_projector_path):
    return load_projector(tiny_projector_path)


def build(vae, dataset, cache_dir, flips=True, args=None):
    key = cache_fingerprint(projector_fingerprint(vae), data_identity(args or data_args(), dataset), flips)
    return build_latent_cache(Accelerator(cpu=True), vae, dataset, key, str(cache_dir), batch_size=5, flips=flips)


def test_cached_views_equal_encoding_the_image_and_its_mirror(vae, tmp_path):
    train, _ = build_datasets(data_args())
    info = build(vae, train, tmp_path)
    cached = CachedLatentDataset(info.path)
    assert len(cached) == len(train) and cached.has_flips
    pixels = torch.stack([train[i]["pixel_values"] for i in range(len(train))])
    batch = cached.__getitems__(list(range(len(train))))
    torch.testing.assert_close(batch["latents"], encode_images(vae, pixels), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch["latents_flipped"], encode_images(vae, pixels.flip(-1)), rtol=1e-5, atol=1e-5)


def test_cached_and_online_batches_pick_the_same_flips(vae, tmp_path):
    train, _ = build_datasets(data_args())
    cached = CachedLatentDataset(build(vae, train, tmp_path).path)
    indices = [0, 3, 5, 7, 8, 11]
    online = {"pixel_values": torch.stack([train[i]["pixel_values"] for i in indices])}
    a = latents_for_batch(collate_cached(cached.__getitems__(indices)), None, True, torch.Generator().manual_seed(3))
    b = latents_for_batch(online, vae, True, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, latents_for_batch(online, vae, False, torch.Generator().manual_seed(3)))


def test_a_second_run_reuses_the_cache_without_encoding(vae, tmp_path, monkeypatch):
    train, _ = build_datasets(data_args())
    first = build(vae, train, tmp_path)
    monkeypatch.setattr(latent_cache, "encode_images", lambda *a: pytest.fail("re-encoded a cached dataset"))
    second = build(vae, train, tmp_path)
    assert (first.reused, second.reused) == (False, True) and first.path == second.path
    assert os.listdir(tmp_path) == [first.fingerprint]  # no temporary folders left behind


def test_the_fingerprint_changes_with_the_projector_and_the_preprocessing(vae, tmp_path):
    train, _ = build_datasets(data_args())
    base = cache_fingerprint(projector_fingerprint(vae), data_identity(data_args(), train), True)
    assert base == cache_fingerprint(projector_fingerprint(vae), data_identity(data_args(), train), True)
    with torch.no_grad():
        vae.encoder.conv_in.weight[0, 0, 0, 0] += 1e-3
    changed_weights = cache_fingerprint(projector_fingerprint(vae), data_identity(data_args(), train), True)
    vae.register_to_config(scaling_factor=0.5)
    changed_scale = cache_fingerprint(projector_fingerprint(vae), data_identity(data_args(), train), True)
    other_data = data_args("--resolution", "32")
    changed_resolution = cache_fingerprint(projector_fingerprint(vae), data_identity(other_data, train), True)
    no_flips = cache_fingerprint(projector_fingerprint(vae), data_identity(data_args(), train), False)
    keys = [base, changed_weights, changed_scale, changed_resolution, no_flips]
    assert len(set(keys)) == len(keys)
    workers = data_args("--dataloader_num_workers", "2")  # does not change the images
    assert cache_fingerprint(projector_fingerprint(vae), data_identity(workers, train), False) == no_flips


def test_a_build_killed_half_way_is_never_read(vae, tmp_path, monkeypatch):
    train, _ = build_datasets(data_args())
    real = latent_cache._encode_shard

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(latent_cache, "_encode_shard", dies)
    with pytest.raises(KeyboardInterrupt):
        build(vae, train, tmp_path)
    assert [name for name in os.listdir(tmp_path) if not name.startswith(".")] == []
    monkeypatch.setattr(latent_cache, "_encode_shard", real)
    info = build(vae, train, tmp_path)
    assert not info.reused and len(CachedLatentDataset(info.path)) == len(train)


def test_training_reuses_the_cache_and_matches_online_encoding(tiny_projector_path, tmp_path):
    def run(name, *extra):
        argv = ["--projector_path", tiny_projector_path, "--output_dir", str(tmp_path / name),
                "--latent_cache_dir", str(tmp_path / "cache"), "--resolution", "16", "--preset", "tiny",
                "--train_batch_size", "6", "--demo_crops_per_photo", "4", "--demo_eval_crops", "2",
                "--report_to", "none", "--max_train_steps", "4", "--random_flip", "--learning_rate", "1e-3",
                *extra]  # fmt: skip
        result = train_lmd(parse_lmd_args(argv))
        return result, [r["loss"] for r in read_jsonl(os.path.join(tmp_path, name, "train_log.jsonl")) if "loss" in r]

    first, cached_losses = run("first")
    second, _ = run("second")
    online, online_losses = run("online", "--no-cache_latents")
    assert (first.cache_reused, second.cache_reused, online.cache_reused) == (False, True, None)
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert cached_losses == pytest.approx(online_losses, rel=1e-4)


def test_changing_an_image_folder_changes_the_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")

    def identity():
        args = data_args("--train_data_dir", str(folder))
        return data_identity(args, build_datasets(args)[0])

    before = identity()
    assert identity() == before  # the same files: the same key, so the cache is reused
    time.sleep(0.01)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "2.png")
    assert identity() != before
