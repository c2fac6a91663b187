"""Saving and loading LMD pipelines: in process, in a fresh process, and through diffusers' custom_pipeline route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from testing_utils import SAMPLE, sample

from diffusers_lmd import LMDInpaintPipeline, LMDPipeline

HUB_FILE = Path(__file__).resolve().parents[2] / "pipelines" / "lmd_pipeline.py"


# One reconstruction and one generation, run the same way in this process and in the subprocesses.
def run_python(code: str, *args, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter, offline, with diffusers' module cache under ``tmp_path``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def public_config(component) -> dict:
    """The config without diffusers' bookkeeping keys (``_name_or_path`` ...); tuples read back as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in component.config.items() if not k.startswith("_")}


@pytest.mark.parametrize("projector, vae_class", [("vq", "VQModel"), ("kl", "AutoencoderKL")])
def test_save_and_load_round_trip_bit_identical(make_pipeline, tmp_path, projector, vae_class):
    pipe = make_pipeline(projector=projector)
    pipe.save_pretrained(tmp_path / "a")
    index = json.loads((tmp_path / "a" / "model_index.json").read_text())
    assert index["_class_name"] == ["lmd_pipeline", "LMDPipeline"]  # the Hub file beside it, for DiffusionPipeline
    assert index["vae"] == ["diffusers", vae_class]
    # diffusers records a component from outside its own libraries under its full module path.
    assert index["transformer"] == ["diffusers_lmd.models.lmd_model", "LMDModel"]
    assert index["scheduler"] == ["diffusers_lmd.schedulers.scheduling_lmd_mask", "LMDMaskScheduler"]
    assert not list(tmp_path.glob("a/**/*.bin"))  # safetensors only

    loaded = LMDPipeline.from_pretrained(tmp_path / "a")
    for name in ("vae", "transformer"):
        assert state_dicts_equal(getattr(pipe, name), getattr(loaded, name))
    for name in ("vae", "transformer", "scheduler"):
        assert public_config(getattr(loaded, name)) == public_config(getattr(pipe, name))
    loaded.save_pretrained(tmp_path / "b")
    again = LMDPipeline.from_pretrained(tmp_path / "b")
    assert np.array_equal(sample(loaded), sample(again))
    # Same weights; CPU convolution kernels can differ in the last bit with the weights' memory alignment.
    np.testing.assert_allclose(sample(pipe), sample(loaded), atol=1e-5, rtol=0)


def test_inpaint_pipeline_loads_an_lmd_pipeline_folder(make_pipeline, tmp_path):
    make_pipeline().save_pretrained(tmp_path)
    pipe = LMDInpaintPipeline.from_pretrained(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(image=torch.rand(1, 3, 16, 16), mask_image=torch.ones(1, 16, 16), output_type="latent")
    assert out.mask.sum() == 16


@pytest.mark.slow
def test_fresh_process_loads_and_reproduces_exactly(make_pipeline, tmp_path):
    make_pipeline().save_pretrained(tmp_path / "pipe")
    code = SAMPLE + textwrap.dedent(
        """
        import sys
        import diffusers_lmd

        pipe = diffusers_lmd.LMDPipeline.from_pretrained(sys.argv[1])
        np.save(sys.argv[2], sample(pipe))
        """
    )
    run_python(code, tmp_path / "pipe", tmp_path / "out.npy", tmp_path=tmp_path)
    expected = sample(LMDPipeline.from_pretrained(tmp_path / "pipe"))
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.slow
def test_custom_pipeline_route_loads_with_only_diffusers_imported(make_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    make_pipeline().save_pretrained(folder)
    code = SAMPLE + textwrap.dedent(
        """
        import shutil
        import sys
        from diffusers import DiffusionPipeline

        folder, hub_file, out = sys.argv[1:4]
        assert "diffusers_lmd" not in sys.modules
        by_path = DiffusionPipeline.from_pretrained(folder, custom_pipeline=hub_file, trust_remote_code=True)
        shutil.copy(hub_file, folder)  # as a Hub repository carries it
        by_name = DiffusionPipeline.from_pretrained(folder, custom_pipeline="lmd_pipeline", trust_remote_code=True)
        np.save(out, np.stack([sample(by_path), sample(by_name)]))
        print(type(by_path).__name__, type(by_name).__module__)
        """
    )
    stdout = run_python(code, folder, HUB_FILE, tmp_path / "out.npy", tmp_path=tmp_path)
    assert stdout.split()[0] == "LMDPipeline" and "lmd_pipeline" in stdout.split()[1]
    expected = sample(LMDPipeline.from_pretrained(folder))
    both = np.load(tmp_path / "out.npy")
    assert np.array_equal(both[0], expected) and np.array_equal(both[1], expected)
