"""The data layer: built-in demo crops, user image folders with bad files, preprocessing and flips."""

import argparse
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_lmd.data import (
    DEMO_PHOTO_NAMES,
    DataConfig,
    DemoCropDataset,
    UnreadableImageWarning,
    build_datasets,
    demo_photos,
    image_to_tensor,
    random_flip_batch,
    random_flip_mask,
    to_rgb,
)
from diffusers_lmd.data.transforms import random_color_batch
from diffusers_lmd.training.args import add_data_args, data_config


def parse(*argv):
    return data_config(add_data_args(argparse.ArgumentParser()).parse_args(list(argv)))


def test_every_data_flag_is_a_data_option_with_its_default():
    flags = {a.dest: a.default for a in add_data_args(argparse.ArgumentParser())._actions if a.dest != "help"}
    options = {f.name: f.default for f in dataclasses.fields(DataConfig)}
    assert flags == {name: default for name, default in options.items() if name in flags}
    assert set(options) - set(flags) == {"label_column", "caption_column"}  # train_lmd.py's conditioning flags
    with pytest.raises(ValueError, match="--resolution must be at least 8"):
        DataConfig(resolution=4)


def stack(dataset):
    return torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])


def test_demo_photos_are_colour_uint8():
    photos = demo_photos()
    assert tuple(photos) == DEMO_PHOTO_NAMES
    for photo in photos.values():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3


def test_demo_datasets_shapes_range_and_sizes():
    train, evaluation = build_datasets(
        parse("--resolution", "32", "--demo_crops_per_photo", "5", "--demo_eval_crops", "3")
    )
    assert len(train) == 4 * 5  # every photo but the held-out one
    assert len(evaluation) == 3 + 1  # crops of the held-out photo plus the whole photo
    pixels = stack(train)
    assert pixels.shape == (20, 3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert pixels.std() > 0.2  # real photo content, not a constant
    assert not torch.equal(pixels[0], pixels[1])  # random crops differ


def test_demo_datasets_are_deterministic_and_seeded():
    argv = ("--resolution", "16", "--demo_crops_per_photo", "3", "--demo_eval_crops", "2")
    train_a, eval_a = build_datasets(parse(*argv))
    train_b, eval_b = build_datasets(parse(*argv))
    assert torch.equal(stack(train_a), stack(train_b)) and torch.equal(stack(eval_a), stack(eval_b))
    train_c, _ = build_datasets(parse(*argv, "--data_seed", "1"))
    assert not torch.equal(stack(train_a), stack(train_c))
    # Drawing more training crops does not move the evaluation set.
    _, eval_d = build_datasets(parse("--resolution", "16", "--demo_crops_per_photo", "7", "--demo_eval_crops", "2"))
    assert torch.equal(stack(eval_a), stack(eval_d))


def test_held_out_photo_never_in_training():
    args = parse("--resolution", "16", "--demo_crops_per_photo", "4", "--demo_eval_photo", "coffee")
    train, evaluation = build_datasets(args)
    assert "coffee" not in train.photos
    assert {name for name, _ in train.crops} == set(DEMO_PHOTO_NAMES) - {"coffee"}
    assert {name for name, _ in evaluation.crops} == {"coffee"}
    whole = evaluation[len(evaluation) - 1]["pixel_values"]
    photo = Image.fromarray(demo_photos()["coffee"])
    assert torch.allclose(whole, image_to_tensor(photo, 16, center_crop=True))


def test_max_train_samples_subsets_demo_data():
    train, _ = build_datasets(parse("--resolution", "16", "--demo_crops_per_photo", "10", "--max_train_samples", "7"))
    assert len(train) == 7


def test_demo_dataset_rejects_unknown_photo():
    with pytest.raises(ValueError, match="Unknown demo photos"):
        DemoCropDataset(["lena"], 2, 16)


def _write_folder(root):
    """A folder with good images of odd sizes and modes, a corrupt file and a truncated JPEG."""
    train = root / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(train / "rgb_odd.png")
    Image.fromarray(rng.integers(0, 256, (70, 21), dtype=np.uint8), mode="L").save(train / "gray.png")
    rgba = rng.integers(0, 256, (25, 25, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on white
    Image.fromarray(rgba, mode="RGBA").save(train / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (9, 200, 3), dtype=np.uint8)).save(train / "wide.jpg")
    (train / "corrupt.png").write_bytes(b"this is not a png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(train / "truncated.jpg", quality=95)
    data = (train / "truncated.jpg").read_bytes()
    (train / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_imagefolder_skips_bad_files_with_named_warnings(tmp_path):
    root = _write_folder(tmp_path)
    args = parse("--train_data_dir", str(root), "--resolution", "24", "--eval_split_ratio", "0.25")
    with pytest.warns(UnreadableImageWarning) as record:
        train, evaluation = build_datasets(args)
    messages = " ".join(str(w.message) for w in record)
    assert "corrupt.png" in messages and "truncated.jpg" in messages
    assert len(train) + len(evaluation) == 4  # the four readable images, in one split or the other
    pixels = torch.cat([stack(train), stack(evaluation)])
    assert pixels.shape[1:] == (3, 24, 24)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_imagefolder_uses_validation_split(tmp_path):
    for split, count in (("train", 3), ("validation", 2)):
        (tmp_path / split).mkdir()
        for i in range(count):
            Image.new("RGB", (20 + i, 30), (i * 40, 0, 0)).save(tmp_path / split / f"{i}.png")
    train, evaluation = build_datasets(parse("--train_data_dir", str(tmp_path), "--resolution", "8"))
    assert (len(train), len(evaluation)) == (3, 2)


def test_dataset_name_loads_local_dataset_with_held_out_slice(tmp_path):
    import datasets

    images = [Image.new("RGB", (12, 12), (i * 20, 0, 0)) for i in range(10)]
    datasets.Dataset.from_dict({"picture": images}).cast_column("picture", datasets.Image()).save_to_disk(tmp_path)
    argv = ("--dataset_name", str(tmp_path), "--resolution", "8", "--eval_split_ratio", "0.2")
    train, evaluation = build_datasets(parse(*argv))
    assert (len(train), len(evaluation)) == (8, 2)
    red = lambda ds: {round(float(ds[i]["pixel_values"][0, 0, 0]), 3) for i in range(len(ds))}  # noqa: E731
    assert not red(train) & red(evaluation)  # the held-out slice is disjoint from training
    with pytest.raises(ValueError, match="--image_column 'image' is not in the dataset"):
        build_datasets(parse(*argv, "--image_column", "image"))


def test_conflicting_dataset_flags_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="either --dataset_name or --train_data_dir"):
        build_datasets(parse("--dataset_name", "x", "--train_data_dir", str(tmp_path)))
    with pytest.raises(ValueError, match="not a directory"):
        build_datasets(parse("--train_data_dir", str(tmp_path / "missing")))


def test_image_to_tensor_any_mode_and_size():
    for image in (
        Image.new("L", (31, 77), 128),
        Image.new("RGBA", (50, 20), (10, 20, 30, 255)),
        Image.new("P", (40, 40)),
        Image.new("I;16", (30, 30), 65535),
        Image.new("CMYK", (33, 17)),
    ):
        pixels = image_to_tensor(image, 16)
        assert pixels.shape == (3, 16, 16) and pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert torch.allclose(image_to_tensor(Image.new("I;16", (8, 8), 65535), 8), torch.ones(3, 8, 8))
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_image_to_tensor_center_and_seeded_random_crop():
    array = np.zeros((10, 40, 3), dtype=np.uint8)
    array[:, 15:25] = 255  # a white band in the middle
    image = Image.fromarray(array)
    center = image_to_tensor(image, 10, center_crop=True)
    assert center[:, :, 3:7].min() > 0.9  # the band is centred
    crop = lambda seed: image_to_tensor(image, 10, False, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(crop(3), crop(3))
    assert any(not torch.equal(crop(0), crop(seed)) for seed in range(1, 6))
    with pytest.raises(ValueError, match="resolution"):
        image_to_tensor(image, 0)


def test_random_flip_batch_flips_some_samples_exactly():
    pixels = torch.randn(64, 3, 4, 5)
    flipped = random_flip_batch(pixels, torch.Generator().manual_seed(0))
    mask = random_flip_mask(64, torch.Generator().manual_seed(0))
    assert torch.equal(flipped[mask], pixels[mask].flip(-1))
    assert torch.equal(flipped[~mask], pixels[~mask])
    assert 10 < int(mask.sum()) < 54
    assert torch.equal(random_flip_batch(pixels, p=0.0), pixels)
    assert torch.equal(random_flip_batch(pixels, p=1.0), pixels.flip(-1))
    with pytest.raises(ValueError, match="B x C x H x W"):
        random_flip_batch(pixels[0])


def test_random_color_batch_permutes_channels_and_scales_saturation():
    pixels = torch.rand(60, 3, 4, 4) * 1.6 - 0.8
    shuffled = random_color_batch(pixels, torch.Generator().manual_seed(0))
    orders = set()
    for original, image in zip(pixels, shuffled):
        order = tuple(next(c for c in range(3) if torch.equal(image[k], original[c])) for k in range(3))
        assert sorted(order) == [0, 1, 2]  # the same three channels, reordered
        orders.add(order)
    assert len(orders) == 6
    assert torch.equal(random_color_batch(pixels, torch.Generator().manual_seed(0)), shuffled)  # seeded
    gray = pixels[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(random_color_batch(gray, permute_channels=False, saturation=0.5), gray)  # no chroma
    small = pixels * 0.3  # far enough from +-1 that no value is clamped
    scaled = random_color_batch(small, torch.Generator().manual_seed(1), permute_channels=False, saturation=0.5)
    chroma = lambda x: (x - x.mean(1, keepdim=True)).flatten(1).norm(dim=1)  # noqa: E731
    ratio = chroma(scaled) / chroma(small)
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 1.5 + 1e-5 and ratio.std() > 0.1
    with pytest.raises(ValueError, match="saturation"):
        random_color_batch(pixels, saturation=2.0)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        random_color_batch(pixels[:, :2])
