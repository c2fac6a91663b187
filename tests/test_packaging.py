"""What a pip install gets (issue 14 item 8): the Hub pipeline file as package data, and plots that are optional."""

import logging
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from setuptools.config.setupcfg import read_configuration

import diffusers_lmd
from diffusers_lmd.pipelines.hub_utils import HUB_PIPELINE_FILE, copy_hub_pipeline_file, hub_pipeline_file
from diffusers_lmd.training.logging import plot_loss_curve, plot_or_warn

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [{"step": 1, "loss": 1.0, "mask_ratio": 0.15}, {"step": 2, "loss": 0.5, "mask_ratio": 0.2}]


def test_the_hub_pipeline_file_is_package_data(tmp_path):
    file = hub_pipeline_file()
    assert file.is_file() and file.name == HUB_PIPELINE_FILE
    assert resources.files("diffusers_lmd.pipelines").joinpath("hub_files", HUB_PIPELINE_FILE).is_file()
    assert Path(diffusers_lmd.__file__).parent in file.resolve().parents  # inside the installed package
    assert copy_hub_pipeline_file(tmp_path)  # what save_pretrained copies into every saved folder
    assert (tmp_path / HUB_PIPELINE_FILE).read_text() == file.read_text()
    assert "class LMDPipeline(lmd_pipelines.LMDPipeline)" in file.read_text()


def test_setup_cfg_ships_it_in_wheels_and_the_checkout_path_still_points_at_it():
    package_data = read_configuration(str(ROOT / "setup.cfg"))["options"]["package_data"]
    patterns = package_data["diffusers_lmd.pipelines"]
    package_dir = ROOT / "src" / "diffusers_lmd" / "pipelines"
    shipped = [path for pattern in patterns for path in package_dir.glob(pattern)]
    assert package_dir / "hub_files" / HUB_PIPELINE_FILE in shipped
    checkout = ROOT / "pipelines" / HUB_PIPELINE_FILE  # the path docs/pipeline.md shows for custom_pipeline=
    assert checkout.read_text() == hub_pipeline_file().read_text()


def test_plots_without_matplotlib_say_what_to_install(no_matplotlib, tmp_path):
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install"):
        plot_loss_curve(RECORDS, str(tmp_path / "loss.png"))
    assert not (tmp_path / "loss.png").exists()


def test_plot_or_warn_skips_a_plot_without_matplotlib(no_matplotlib, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="diffusers_lmd"):
        assert plot_or_warn(plot_loss_curve, RECORDS, str(tmp_path / "loss.png")) is None
    assert "Skipped plot_loss_curve" in caplog.text and "matplotlib" in caplog.text


def test_plot_or_warn_plots_when_matplotlib_is_there(tmp_path):
    path = plot_or_warn(plot_loss_curve, RECORDS, str(tmp_path / "loss.png"))
    assert path == str(tmp_path / "loss.png") and (tmp_path / "loss.png").stat().st_size > 1000


def test_the_projector_script_finishes_without_matplotlib(
    no_matplotlib, tmp_path, caplog, fresh_accelerate_state, restore_verbosity
):
    from testing_utils import TINY_PROJECTOR_FLAGS, load_script

    from diffusers_lmd.training.projector import train_projector

    args = load_script("train_projector").parse_args(
        [*TINY_PROJECTOR_FLAGS, "--output_dir", str(tmp_path), "--max_train_steps", "1"]
    )
    with caplog.at_level(logging.WARNING, logger="diffusers_lmd"):
        result = train_projector(args)
    assert result["global_step"] == 1 and (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "README.md").is_file() and not (tmp_path / "loss_curve.png").exists()
    assert "Skipped plot_loss_curve" in caplog.text


@pytest.mark.slow
def test_the_readmes_wheel_builds_with_the_package_its_data_and_no_benchmark_harness(tmp_path):
    """README's install line `pip wheel --no-deps -w dist .`: the wheel holds the library, the Hub pipeline file and
    nothing of benchmarks/ or tests/."""
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    build = subprocess.run([*command, str(ROOT)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("diffusers_lmd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffusers_lmd/__init__.py" in names and f"diffusers_lmd/pipelines/hub_files/{HUB_PIPELINE_FILE}" in names
    assert not any(name.startswith(("lmd_bench/", "benchmarks/", "tests/")) for name in names)
    assert not any("benchmarking" in name for name in names)
