"""Fashion-MNIST (method.md §8): the real IDX files through ``datasets``, and every way the files can be bad."""

import argparse
import gzip
import struct

import datasets
import numpy as np
import pytest
import torch
from testing_utils import ROOT, fake_fashion_mnist, write_idx

from diffusers_lmd.data import FASHION_MNIST_LABELS, build_datasets, load_fashion_mnist, read_idx
from diffusers_lmd.data import fashion_mnist as fmnist
from diffusers_lmd.training.args import add_data_args, data_config


def parse(*argv):
    return data_config(add_data_args(argparse.ArgumentParser()).parse_args(list(argv)))


# ------------------------------------------------------------------------------------------------ real data
def test_real_fashion_mnist_is_a_datasetdict_with_labels(fashion_mnist_dir):
    data = load_fashion_mnist(fashion_mnist_dir)
    assert isinstance(data, datasets.DatasetDict) and set(data) == {"train", "test"}
    assert (len(data["train"]), len(data["test"])) == (60_000, 10_000)
    label = data["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == list(FASHION_MNIST_LABELS)
    first = data["train"][0]
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    assert first["label"] == 9  # the first training image is an ankle boot
    counts = np.bincount(data["test"]["label"], minlength=10)
    assert counts.tolist() == [1000] * 10  # the test split is balanced
    # The images are the IDX bytes themselves (PNG is lossless).
    raw = read_idx(f"{fashion_mnist_dir}/t10k-images-idx3-ubyte.gz")
    assert np.array_equal(np.asarray(data["test"][3]["image"]), raw[3])


def test_dataset_name_reaches_the_local_files_and_pads_to_32(fashion_mnist_dir):
    args = parse(
        "--dataset_name", "fashion_mnist", "--resolution", "32", "--pad_to_resolution", "--max_eval_samples", "8"
    )
    train, evaluation = build_datasets(args)
    assert len(train) == 60_000 and len(evaluation) == 8  # the test split is the evaluation split
    x = train[0]["pixel_values"]
    assert x.shape == (3, 32, 32)
    assert torch.all(x[:, :2] == -1) and torch.all(x[:, :, -2:] == -1)  # a 2-pixel black border
    raw = read_idx(f"{fashion_mnist_dir}/train-images-idx3-ubyte.gz")[0]
    expected = torch.from_numpy(raw.astype(np.float32) / 127.5 - 1.0)
    torch.testing.assert_close(x[0, 2:30, 2:30], expected)  # the pixels are exact, not resampled
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # greyscale as RGB


def test_the_hub_id_also_reads_the_local_files(fashion_mnist_dir):
    train, _ = build_datasets(parse("--dataset_name", fmnist.FASHION_MNIST_HUB_ID, "--resolution", "32"))
    assert len(train) == 60_000


# ------------------------------------------------------------------------------------------- synthetic files
def test_train_data_dir_with_idx_files_and_the_cache(tmp_path):
    folder = fake_fashion_mnist(tmp_path / "idx")
    data = load_fashion_mnist(folder, cache_dir=str(tmp_path / "cache"))
    assert (len(data["train"]), len(data["test"])) == (12, 5)
    again = load_fashion_mnist(folder, cache_dir=str(tmp_path / "cache"))
    assert again["train"].cache_files == data["train"].cache_files  # built once, then reused
    labels = read_idx(f"{folder}/train-labels-idx1-ubyte.gz")
    assert data["train"]["label"] == labels.tolist()
    train, evaluation = build_datasets(parse("--train_data_dir", folder, "--resolution", "28"))
    assert (len(train), len(evaluation)) == (12, 5)
    # New file contents give new tables, not the stale cache.
    fake_fashion_mnist(tmp_path / "idx", seed=1)
    changed = load_fashion_mnist(folder, cache_dir=str(tmp_path / "cache"))
    assert changed["train"]["label"] != data["train"]["label"]


def test_idx_reader_raw_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", array)), array)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", array, gz=False)), array)


@pytest.mark.parametrize(
    "damage, message",
    [
        (dict(cut=10), "promises 300 data bytes.*holds 290.*truncated"),
        (dict(magic=2049), "wrong IDX magic number 2049 \\(expected 2051\\)"),
        (dict(magic=1234), "wrong IDX magic number 1234"),
        (dict(cut=304), "truncated"),
    ],
)
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, damage, message):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 10, 10)), **damage)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path, fmnist.IDX_IMAGES_MAGIC)
    assert "train-images-idx3-ubyte.gz" in str(err.value)


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = gzip.compress(struct.pack(">iI", 2049, 100) + bytes(100))
    path.write_bytes(good[: len(good) // 2])  # a download cut in half
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: not a readable IDX file"):
        read_idx(path)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ValueError, match="not a readable IDX file"):
        read_idx(path)


def test_counts_that_disagree_and_bad_labels(tmp_path):
    folder = fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11))
    with pytest.raises(ValueError, match="holds 12 images but .*train-labels-idx1-ubyte.gz holds 11 labels"):
        load_fashion_mnist(folder, cache_dir=str(tmp_path / "cache"))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(12, 10))
    with pytest.raises(ValueError, match="label 10 is outside the 10 Fashion-MNIST classes"):
        load_fashion_mnist(folder, cache_dir=str(tmp_path / "cache"))


def test_missing_data_offline_names_the_debian_package_and_the_hub_id(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv(fmnist.DATA_DIR_ENV, raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    for call in (lambda: load_fashion_mnist(), lambda: build_datasets(parse("--dataset_name", "fashion_mnist"))):
        with pytest.raises(ValueError, match="dataset-fashion-mnist") as err:
            call()
        assert "zalando-datasets/fashion_mnist" in str(err.value)
    with pytest.raises(ValueError, match="does not hold the four IDX files"):
        load_fashion_mnist(tmp_path)


def test_the_environment_variable_points_at_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv(fmnist.DATA_DIR_ENV, fake_fashion_mnist(tmp_path))
    assert fmnist.find_local_data_dir() == str(tmp_path)


def test_committed_projector_reconstructs_the_test_split_with_normalised_latents(fashion_mnist_dir, one_thread):
    """assets/fashion-mnist-projector: f = 2, 4x16x16 latents of about zero mean and unit variance, ~34 dB."""

    from diffusers import VQModel

    from diffusers_lmd import decode_latents, downsample_factor, encode_images, psnr

    vae = VQModel.from_pretrained(ROOT / "assets" / "fashion-mnist-projector").eval()
    assert downsample_factor(vae) == 2 and vae.config.latent_channels == 4
    _, evaluation = build_datasets(parse("--dataset_name", "fashion_mnist", "--resolution", "32", "--pad_to_resolution",
                                         "--max_eval_samples", "128"))  # fmt: skip
    images = torch.stack([evaluation[i]["pixel_values"] for i in range(len(evaluation))])
    latents = encode_images(vae, images)
    assert latents.shape == (128, 4, 16, 16)
    assert abs(latents.mean().item()) < 0.1 and 0.8 < latents.var().item() < 1.2  # the stored shift and scale
    reconstruction = decode_latents(vae, latents).clamp(-1, 1)
    assert psnr(reconstruction, images).mean().item() > 32.0  # the card: 33.83 dB on all 10,000 test images
