"""training/evaluate_fid.py end to end on tiny image folders and a saved dataset, with a tiny DINOv2 saved to a
temporary folder (offline), and its refusals of bad input."""

import importlib.util
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from testing_utils import tiny_dinov2_folder

from diffusers_lmd.metrics import ImageSetConfig
from diffusers_lmd.training.args import build_evaluate_fid_parser

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_fid", REPO / "training" / "evaluate_fid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pictures(count: int, seed: int, brightness: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(np.clip(rng.integers(0, 200, (20, 24, 3)) + brightness, 0, 255).astype(np.uint8))
        for _ in range(count)
    ]


def image_folder(root: Path, count: int, seed: int = 0, brightness: int = 0) -> str:
    root.mkdir(parents=True)
    for i, picture in enumerate(_pictures(count, seed, brightness)):
        picture.save(root / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory) -> str:
    return tiny_dinov2_folder(tmp_path_factory.mktemp("dinov2"))


def test_the_command_scores_two_folders_and_writes_json(tmp_path, dinov2_dir, capsys):
    real = image_folder(tmp_path / "real", 8, seed=0)
    generated = image_folder(tmp_path / "generated", 6, seed=1, brightness=60)
    output = tmp_path / "out" / "fid.json"
    argv = ["--real", real, "--generated", generated, "--feature_network", "dinov2"]
    argv += ["--feature_network_path", dinov2_dir, "--kid_subsets", "5", "--device", "cpu", "--output", str(output)]
    result = load_script().main(argv)
    written = json.loads(output.read_text())
    assert written == result
    assert (written["num_real"], written["num_generated"], written["resolution"]) == (8, 6, 16)
    assert (written["feature_network"], written["feature_network_path"]) == ("dinov2", dinov2_dir)
    assert written["fid"] > 0 and written["kid_subset_size"] == 6 and written["kid_subsets"] == 5
    assert written["feature_dim"] == 16 and written["comparable_with_inception_fid"] is False
    printed = capsys.readouterr().out
    for text in ("FID ", "KID ", " ± ", "8 real, 6 generated", dinov2_dir, "NOT comparable with Inception FID"):
        assert text in printed


def test_a_saved_dataset_against_itself_scores_zero_with_a_folder_network(tmp_path, dinov2_dir):
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"picture": _pictures(5, seed=2)}).cast_column("picture", datasets.Image()).save_to_disk(
        saved
    )
    argv = ["--real", str(saved), "--generated", str(saved), "--feature_network", dinov2_dir, "--resolution", "24"]
    result = load_script().main(argv + ["--max_samples", "4", "--kid_subsets", "2", "--device", "cpu"])
    assert (result["feature_network"], result["num_real"], result["resolution"]) == ("custom", 4, 24)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)


def test_every_flag_has_an_option_and_shows_its_default():
    parser = build_evaluate_fid_parser()
    options = set(ImageSetConfig.__dataclass_fields__)
    flags = {action.dest for action in parser._actions} - {"help"}
    assert options <= flags
    assert "(default: inception)" in parser.format_help()


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"--real": "/nonexistent/real-images"}, "--real '/nonexistent/real-images' does not exist"),
        ({"--generated": "./missing-generated-folder"}, "--generated './missing-generated-folder' does not exist"),
        ({"--feature_network": "vgg"}, "--feature_network 'vgg' is neither"),
        ({"--max_samples": "1"}, "--max_samples must be at least 2"),
        ({"--kid_subset_size": "1"}, "--kid_subset_size must be at least 2"),
    ],
)
def test_bad_input_names_the_flag(tmp_path, dinov2_dir, change, flag):
    folder = image_folder(tmp_path / "images", 3)
    args = {"--real": folder, "--generated": folder, "--feature_network": dinov2_dir, "--device": "cpu", **change}
    with pytest.raises(ValueError, match=flag):
        load_script().main([item for pair in args.items() for item in pair])


def test_too_few_images_for_kid_names_the_source(tmp_path, dinov2_dir):
    one = image_folder(tmp_path / "one", 1)
    two = image_folder(tmp_path / "two", 2)
    argv = ["--real", two, "--generated", one, "--feature_network", dinov2_dir, "--device", "cpu"]
    with pytest.raises(ValueError, match="--generated .* holds 1 readable image.*at least 2"):
        load_script().main(argv)


def test_a_split_that_does_not_exist_names_the_split_flag(tmp_path, dinov2_dir):
    folder = image_folder(tmp_path / "images", 2)
    argv = ["--real", folder, "--generated", folder, "--real_split", "test", "--feature_network", dinov2_dir]
    with pytest.raises(ValueError, match="--real_split 'test' is not a split of --real"):
        load_script().main(argv + ["--device", "cpu"])
