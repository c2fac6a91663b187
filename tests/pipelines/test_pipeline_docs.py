"""docs/pipeline.md runs as written, and the comparison grid it documents shows original | masked | reconstruction."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusers_lmd.pipelines.visualization import comparison_grid, main

REPO = Path(__file__).resolve().parents[2]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_comparison_grid_lays_out_original_masked_and_reconstruction(make_pipeline):
    pipe = make_pipeline()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    grid = np.asarray(comparison_grid(pipe, images, mask_ratio=0.5, generator=generators, gap=2)) / 255.0
    assert grid.shape == (2 * 16 + 2, 3 * 16 + 2 * 2, 3)

    out = pipe(image=images, mask_ratio=0.5, generator=[torch.Generator().manual_seed(i) for i in range(2)])
    for row in range(2):
        top = row * 18
        original, masked = grid[top : top + 16, :16], grid[top : top + 16, 18:34]
        np.testing.assert_allclose(original, images[row].permute(1, 2, 0).numpy(), atol=1 / 255)
        token_grid = out.mask[row].reshape(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1).bool().numpy()
        np.testing.assert_allclose(masked[token_grid], 0.5, atol=1 / 255)  # masked tokens are grey
        np.testing.assert_array_equal(masked[~token_grid], original[~token_grid])
        np.testing.assert_array_equal(grid[top : top + 16, 36:], np.asarray(out.images[row]) / 255.0)


def test_grid_script_writes_a_png_from_a_saved_pipeline(make_pipeline, tmp_path):
    make_pipeline().save_pretrained(tmp_path / "pipe")
    main([str(tmp_path / "pipe"), "--output", str(tmp_path / "grid.png"), "--num_images", "2", "--scale", "2"])
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (3 * 32 + 2 * 2, 2 * 32 + 2)


def save_conditional_pipelines(components: dict, folder: Path) -> None:
    """The docs' ``fmnist-lmd`` (class-conditional, diffusion and MSE heads, Fashion-MNIST's names),
    ``fmnist-lmd-categorical`` and ``text-lmd``, tiny."""
    from conftest import tiny_clip

    from diffusers_lmd import LMDModel, LMDPipeline
    from diffusers_lmd.data.fashion_mnist import FASHION_MNIST_LABELS

    tiny = dict(sample_size=8, in_channels=4, patch_size=2)
    classes = LMDModel.from_preset("tiny", **tiny, num_class_embeds=10, head_type="diffusion", mse_loss_weight=1.0)
    names = dict(enumerate(FASHION_MNIST_LABELS))
    LMDPipeline(**{**components, "transformer": classes}, id2label=names).save_pretrained(folder / "fmnist-lmd")
    codes = components["vae"].config.num_vq_embeddings
    categorical = LMDModel.from_preset(
        "tiny", **tiny, num_class_embeds=10, head_type="categorical", codebook_size=codes
    )
    LMDPipeline(**{**components, "transformer": categorical}, id2label=names).save_pretrained(
        folder / "fmnist-lmd-categorical"
    )
    text = LMDModel.from_preset("tiny", **tiny, cross_attention_dim=16)
    tokenizer, text_encoder = tiny_clip()
    LMDPipeline(**{**components, "transformer": text}, tokenizer=tokenizer, text_encoder=text_encoder).save_pretrained(
        folder / "text-lmd"
    )


@pytest.mark.slow
def test_docs_examples_run(make_pipeline, make_pipeline_components, tmp_path):
    blocks = python_blocks((REPO / "docs" / "pipeline.md").read_text())
    assert len(blocks) >= 12
    make_pipeline().save_pretrained(tmp_path / "demo-output")
    save_conditional_pipelines(make_pipeline_components(), tmp_path)
    shutil.copy(REPO / "pipelines" / "lmd_pipeline.py", tmp_path / "demo-output")  # as train_lmd.py does
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is many times faster than two on a shared CPU
    result = subprocess.run(
        [sys.executable, "-c", "\n\n".join(blocks)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("reconstruction.png", "inpainted.png", "generated.png", "comparison.png", "sneaker.png",
                 "classes.png", "prompted.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "my-lmd-pipeline" / "model_index.json").is_file()
    assert "still masked" in result.stdout
    assert "'Sneaker': 7" in result.stdout and "[7, 8]" in result.stdout and "DDIMScheduler" in result.stdout
