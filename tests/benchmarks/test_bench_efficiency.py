"""The efficiency benchmark's loop, methods and headline arithmetic, on tiny models and a tiny time budget.

No timing is asserted: speed is what the benchmark measures, not what tests check.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator

from diffusers_lmd import decode_latents, encode_images, patchify, psnr
from diffusers_lmd.data import build_datasets
from diffusers_lmd.evaluation import eval_masks, latent_reference_psnr, pixel_reference_psnr
from diffusers_lmd.schedulers import LMDMaskScheduler
from diffusers_lmd.training import load_projector
from diffusers_lmd.training.args import add_data_args, data_config
from lmd_bench.budget import RunSettings
from lmd_bench.data import BenchmarkData, EpochSampler, build_benchmark_data
from lmd_bench.efficiency_loop import evaluate_psnr, masked_latent_mse, train_for_budget
from lmd_bench.efficiency_methods import mask_ratio_at
from lmd_bench.efficiency_presets import get_preset
from lmd_bench.efficiency_registry import METHODS, build_method, vitmae_like
from lmd_bench.efficiency_report import setting_lines
from lmd_bench.efficiency_results import (
    HEADLINE_METHODS,
    add_time_to_target,
    first_reach,
    seeded_speedup,
    speedup,
    target_psnr,
)
from lmd_bench.throughput import lmd_cost_per_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest and fights no one
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW_FIELDS = {"method", "steps", "mit_s", "mli", "mlt_s", "final_psnr", "time_to_target_s", "peak_mem_mb"}
TINY_UNET = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=4,
)


def tiny_preset(**changes):
    """16-px images, the 'tiny' ViT, tiny U-Nets, a one-second budget."""
    base = get_preset("cpu").with_overrides(
        resolution=16,
        budget_s=1.0,
        train_batch_size=4,
        num_evals=2,
        mit_warmup_steps=0,
        lr_warmup_steps=1,
        lmd_preset="tiny",
        unet_latent=TINY_UNET,
        unet_pixel=TINY_UNET,
        demo_crops_per_photo=4,
        demo_eval_crops=2,
    )
    return base.with_overrides(**changes)


def tiny_data_args():
    flags = ["--resolution", "16", "--random_flip", "--demo_crops_per_photo", "4", "--demo_eval_crops", "2"]
    return data_config(add_data_args(argparse.ArgumentParser()).parse_args(flags))


@pytest.fixture(scope="module")
def bench_data(tiny_projector_path, tmp_path_factory):
    vae = load_projector(tiny_projector_path)
    args = tiny_data_args()
    train, evaluation = build_datasets(args)
    cache_dir = str(tmp_path_factory.mktemp("latents"))
    data, cost = build_benchmark_data(args, train, evaluation, vae, cache_dir, Accelerator(cpu=True))
    return vae, data, cost


def test_data_holds_both_views_and_pixel_and_latent_batches_flip_alike(bench_data):
    vae, data, cost = bench_data
    assert data.train_latents.shape == (len(data), 4, 8, 8) and cost["cache_reused"] is False
    indices = torch.arange(len(data))
    pixels = data.batch("pixel", indices, torch.Generator().manual_seed(3))
    latents = data.batch("latent", indices, torch.Generator().manual_seed(3))
    flipped = (pixels != data.train_images).flatten(1).any(1)
    assert 0 < int(flipped.sum()) < len(data)  # some flipped, some not
    expected = torch.where(flipped[:, None, None, None], data.train_latents_flipped, data.train_latents)
    torch.testing.assert_close(latents, expected)
    with pytest.raises(ValueError, match="space"):
        data.batch("voxels", indices, torch.Generator())


def test_epoch_sampler_covers_every_image_once_per_epoch_and_is_seeded():
    sampler = EpochSampler(10, 5, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(sampler), next(sampler)])
    assert sorted(epoch.tolist()) == list(range(10))
    again = EpochSampler(10, 5, torch.Generator().manual_seed(0))
    assert torch.equal(next(again), epoch[:5])
    with pytest.raises(ValueError, match="batch_size"):
        EpochSampler(3, 4, torch.Generator())


def test_schedule_spans_the_whole_budget():
    cosine = LMDMaskScheduler("cosine")
    assert mask_ratio_at(cosine, 0.0) == pytest.approx(0.15)
    assert mask_ratio_at(cosine, 0.5) < 0.75 <= mask_ratio_at(cosine, 2 / 3)
    assert mask_ratio_at(LMDMaskScheduler("uniform"), 0.5) == pytest.approx(0.45)
    assert mask_ratio_at(LMDMaskScheduler("uniform"), 1.7) == pytest.approx(0.75)  # clamped to the end


@pytest.mark.parametrize("name", ["lmd-pixel", "mae-pixel", "lmd-unet", "lmd-cs"])
def test_reconstructions_keep_visible_pixels_or_latents(bench_data, name):
    vae, data, _ = bench_data
    method = build_method(name, tiny_preset(), vae)
    images = data.eval_images[:2]
    num_tokens = (16 // method.token_pixels) ** 2
    assert num_tokens == 16  # every method tokenises the image into the same 4x4 grid
    mask = torch.zeros(2, num_tokens)
    mask[:, :12] = 1.0  # 12 of 16 = ratio 0.75
    out = method.reconstruct(images, mask)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    if method.space == "pixel":  # visible patches come back exactly
        side = method.token_pixels
        torch.testing.assert_close(out[:, :, -side:, -side:], images[:, :, -side:, -side:])
    assert math.isfinite(evaluate_psnr(method, data.eval_images))


def test_latent_reference_points(bench_data):
    vae, data, _ = bench_data
    references = latent_reference_psnr(vae, data.eval_images, patch_size=2)
    decoded = decode_latents(vae, encode_images(vae, data.eval_images)).clamp(-1, 1)
    assert references["projector"] == pytest.approx(psnr(decoded, data.eval_images).mean().item())
    assert math.isfinite(references["mean_latent"]) and references["mean_latent"] != references["projector"]
    latents = encode_images(vae, data.eval_images)
    mask = eval_masks(range(len(latents)), 16)  # 12 of 16 tokens masked per image
    tokens = patchify(latents, 2).reshape(len(latents), 16, 4, latents.shape[1])  # B x L x (2*2 cells) x C
    visible_mean = (tokens * (1 - mask)[:, :, None, None]).sum((1, 2)) / (4 * (1 - mask).sum(1, keepdim=True))
    error = (tokens - visible_mean[:, None, None, :]).pow(2).mean((2, 3))  # per token, filling with that mean
    expected = (error * mask).sum(1) / mask.sum(1)
    assert references["mean_latent_mse"] == pytest.approx(expected.mean().item(), rel=1e-5)
    for name, defined in (("lmd-cs", True), ("lmd-unet", True), ("mae-pixel", False), ("ldm-latent", False)):
        mse = masked_latent_mse(build_method(name, tiny_preset(), vae), data.eval_images)
        assert (mse is not None and math.isfinite(mse)) if defined else mse is None


def test_pixel_floor_fills_masked_patches_with_the_visible_mean_colour():
    flat = torch.full((1, 3, 8, 8), 0.5)  # a flat image: its visible mean colour predicts every masked patch
    assert pixel_reference_psnr(flat, token_pixels=4)["mean_pixel"] == float("inf")

    image = torch.zeros(1, 3, 8, 8)
    image[0, 1, :4, :4] = 1.0  # one green patch (token 0) on black; 3 of the 4 tokens are masked
    if eval_masks(range(1), 4)[0, 0] > 0:  # green patch hidden: black fill misses its 16 pixels by 1
        mse = 16 / (3 * 64)
    else:  # green patch is the only visible one: all three masked patches are filled green, 48 pixels off by 1
        mse = 48 / (3 * 64)
    expected = 10 * math.log10(2.0**2 / mse)
    assert pixel_reference_psnr(image, token_pixels=4)["mean_pixel"] == pytest.approx(expected)


def test_vitmae_rejects_an_evaluation_mask_of_another_ratio(bench_data):
    vae, data, _ = bench_data
    method = build_method("mae-pixel", tiny_preset(), vae)
    with pytest.raises(ValueError, match="evaluation mask"):
        method.reconstruct(data.eval_images[:1], torch.zeros(1, 16))


def test_smoke_run_rows_and_headline(bench_data):
    vae, data, _ = bench_data
    preset = tiny_preset()
    rows = [train_for_budget(build_method(name, preset, vae), data, preset) for name in ("lmd-cs", "ddpm-pixel")]
    target = target_psnr(rows)
    add_time_to_target(rows, target)
    lmd, ddpm = rows
    assert ROW_FIELDS <= set(lmd) and ROW_FIELDS <= set(ddpm)
    assert lmd["steps"] >= 1 and lmd["peak_mem_mb"] > 0
    assert math.isfinite(lmd["final_psnr"]) and lmd["curve"][0][:2] == [0.0, 0]
    assert math.isfinite(lmd["eval_latent_mse"]) and ddpm["eval_latent_mse"] is None
    assert math.isfinite(lmd["final_train_psnr"]) and ddpm["final_train_psnr"] is None
    assert target == max(point[2] for point in lmd["curve"])  # the only MAE-family row sets the target
    assert lmd["time_to_target_s"] is not None
    assert ddpm["final_psnr"] is None and ddpm["time_to_target_s"] is None and ddpm["curve"] == []
    assert all(len(point) == 4 for point in lmd["losses"])  # step, seconds, loss, mask ratio
    json.dumps(rows)  # the rows are plain JSON


def test_cpu_clock_budgets_process_time(bench_data):
    vae, data, _ = bench_data
    preset = tiny_preset(budget_s=0.3)
    row = train_for_budget(build_method("mae-pixel", preset, vae), data, preset, RunSettings(clock="cpu"))
    assert row["clock"] == "cpu" and row["train_s"] >= 0.3 and row["steps"] >= 1
    with pytest.raises(ValueError, match="clock"):
        train_for_budget(build_method("mae-pixel", preset, vae), data, preset, RunSettings(clock="sundial"))


def test_target_is_the_best_psnr_every_masked_autoencoder_reaches():
    rows = [
        {"method": "lmd-cs", "curve": [[0.0, 0, 10.0], [1.0, 5, 14.0], [2.0, 9, 16.0]]},
        {"method": "mae-pixel", "curve": [[0.0, 0, 10.0], [1.0, 3, 12.0], [2.0, 6, 15.0]]},
        {"method": "lmd-unet", "curve": [[0.0, 0, 9.0], [2.0, 4, 11.0]]},  # not a masked autoencoder
        {"method": "ddpm-pixel", "curve": []},
    ]
    assert target_psnr(rows) == 15.0
    add_time_to_target(rows, 15.0)
    # The crossing is interpolated between the evaluations around it: lmd-cs passes 15 halfway from 14 to 16.
    assert [(r["time_to_target_s"], r["steps_to_target"]) for r in rows] == [
        (1.5, 7),
        (2.0, 6),
        (None, None),
        (None, None),
    ]
    assert first_reach(rows[0]["curve"], 13.0) == (0.75, 4)
    assert first_reach(rows[0]["curve"], 10.0) == (0.0, 0)
    # lmd-cs: 7 steps in 1.5 s, mae-pixel: 6 steps in 2 s -> 0.75x the time = 7/6 the steps x 0.64 the step cost
    ratio = speedup(rows)
    assert ratio["time_ratio"] == pytest.approx(0.75) and ratio["steps_ratio"] == pytest.approx(7 / 6)
    assert ratio["step_cost_ratio"] == pytest.approx(0.75 * 6 / 7) and ratio["meets_one_third"] is False
    assert speedup(rows, method="lmd-unet") is None  # never reached the target
    assert target_psnr([{"method": "ddpm-pixel", "curve": []}]) is None


def test_every_method_key_builds(tiny_projector_path):
    vae = load_projector(tiny_projector_path)
    for name in METHODS:
        method = build_method(name, tiny_preset(), vae)
        assert method.name == name and method.space in ("pixel", "latent")
    with pytest.raises(ValueError, match="Unknown methods"):
        build_method("vq-gan", tiny_preset(), vae)


def test_cost_per_image_online_encoding_adds_the_encoder(bench_data):
    vae, data, _ = bench_data
    model = build_method("lmd-cs", tiny_preset(), vae).model
    rows = lmd_cost_per_image(model, vae, data.train_images[:4], mask_ratios=(0.15, 0.75), ceiling_tflops=1.0, iters=1)
    assert [row["mask_ratio"] for row in rows] == [0.15, 0.75]
    for row in rows:
        assert row["online_ms"] == pytest.approx(row["cached_ms"] + row["encode_ms"])
        assert row["step_tflops"] > 0 and row["mfu"] == pytest.approx(row["step_tflops"])


def test_train_probe_is_evenly_spaced_training_images_as_many_as_held_out():
    train = torch.arange(10.0).reshape(10, 1, 1, 1).expand(10, 3, 2, 2)
    data = BenchmarkData(train_images=train, eval_images=torch.zeros(4, 3, 2, 2))
    assert data.train_probe()[:, 0, 0, 0].tolist() == [0.0, 3.0, 6.0, 9.0]
    small = BenchmarkData(train_images=train[:2], eval_images=torch.zeros(4, 3, 2, 2))
    assert small.train_probe().shape[0] == 2  # never more than the training set


def test_data_round_trips_through_safetensors(bench_data, tmp_path):
    _, data, _ = bench_data
    data.save(str(tmp_path / "data.safetensors"))
    loaded = BenchmarkData.load(str(tmp_path / "data.safetensors"))
    torch.testing.assert_close(loaded.train_latents_flipped, data.train_latents_flipped)


@pytest.mark.slow
def test_script_end_to_end_with_a_given_projector(tiny_projector_path, tmp_path):
    """The command line: a method in its own process, the JSON schema, tables and plots."""
    output = tmp_path / "efficiency.json"
    flags = ["--preset", "cpu", "--output", str(output), "--methods", "lmd-cs"]
    flags += ["--projector_path", tiny_projector_path, "--budget_s", "0.5", "--resolution", "16"]
    flags += ["--train_batch_size", "4", "--lmd_preset", "tiny", "--num_evals", "1", "--demo_crops_per_photo", "4"]
    flags += ["--work_dir", str(tmp_path / "work"), "--plots_dir", str(tmp_path / "plots")]
    flags += ["--markdown", str(tmp_path / "tables.md"), "--no-throughput", "--num_threads", "1", "--clock", "cpu"]
    script = os.path.join(REPO, "benchmarks", "bench_efficiency.py")
    subprocess.run([sys.executable, script, *flags], check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(output.read_text())
    assert {"target_psnr", "budget_s", "hardware", "projector", "reference_psnr", "rows"} <= set(result)
    assert [row["method"] for row in result["rows"]] == ["lmd-cs"]
    for row in result["rows"]:
        assert ROW_FIELDS <= set(row) and math.isfinite(row["final_psnr"])
    assert result["projector"]["trained_here"] is False and result["clock"] == "cpu"
    assert sorted(os.listdir(tmp_path / "plots")) == [
        "efficiency_cpu_loss_curves.png",
        "efficiency_cpu_psnr_vs_time.png",
        "mask_schedules.png",
    ]
    tables = (tmp_path / "tables.md").read_text()
    assert "Table 1" in tables
    # the projector's own line (this fixture records no training cost), with the floors the methods are read against
    assert f"- projector: {tiny_projector_path}, training cost unknown" in tables
    assert "held-out, masked pixels" in tables and "training images, masked latents" in tables


def test_setting_lines_report_the_projector_cost_and_the_floors():
    result = {
        "projector": {"trained_here": False, "projector_class": "VQModel", "global_step": 1600,
                      "train_seconds": 1942.94, "eval_psnr": 21.828},
        "reference_psnr": {"projector": 21.828, "mean_latent": 17.326, "mean_pixel": 18.841},
        "train_reference_psnr": {"mean_pixel": 16.291},
    }  # fmt: skip
    lines = setting_lines(result).splitlines()
    assert lines[0] == (
        "- projector: VQModel trained beforehand by `training/train_projector.py`, 1600 steps, 1942.9 s of "
        "training, held-out PSNR 21.83 dB (not in any method's budget)"
    )
    assert lines[1:] == [
        "- reference PSNR on the held-out, every latent as encoded (latent ceiling): 21.83 dB",
        "- reference PSNR on the held-out, masked latents = the image's visible mean latent (latent floor): 17.33 dB",
        "- reference PSNR on the held-out, masked pixels = the image's visible mean colour (pixel floor): 18.84 dB",
        "- reference PSNR on the training images, masked pixels = the image's visible mean colour (pixel floor): "
        "16.29 dB",
    ]


def test_vitmae_peer_has_mae_position_tables_and_tokens():
    """transformers 5.x builds ViTMAE with zero position tables; the benchmark's peer must have MAE's sin-cos ones."""
    from diffusers_lmd import LMDModel
    from diffusers_lmd.models.embeddings import sincos_2d_position_embedding

    reference = LMDModel.from_preset("tiny", sample_size=32, in_channels=3, patch_size=4)
    model = vitmae_like(reference, image_size=32, patch_size=4)
    grid = 32 // 4
    for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
        dim = table.shape[-1]
        ours = sincos_2d_position_embedding(dim, grid, grid)  # rows in the first half, columns in the second
        mae_layout = torch.cat([ours[:, dim // 2 :], ours[:, : dim // 2]], dim=1)  # MAE puts the column first
        assert torch.count_nonzero(table[0, 1:]) > 0.9 * table[0, 1:].numel()
        torch.testing.assert_close(table[0, 1:], mae_layout, atol=1e-6, rtol=0)
        assert torch.all(table[0, 0] == 0)  # the CLS slot carries no position
        assert not table.requires_grad  # fixed, as in MAE
    for token in (model.vit.embeddings.cls_token, model.decoder.mask_token):
        assert 0.01 < token.std().item() < 0.04  # normal(0, 0.02), not zeros
    weight = model.vit.embeddings.patch_embeddings.projection.weight
    bound = math.sqrt(6 / (weight.shape[0] + weight[0].numel()))  # xavier-uniform on the flattened kernel
    assert weight.abs().max() <= bound and weight.std() > 0.5 * bound / math.sqrt(3)


def test_target_between_the_floor_and_the_headline_runs_peaks_and_seeded_headline():
    def row(method, seed, curve):
        return {"method": method, "seed": seed, "curve": curve}

    rows = [
        row("lmd-cs", 0, [[0.0, 0, 10.0], [1.0, 10, 18.0], [2.0, 20, 20.0]]),
        row("lmd-cs", 1, [[0.0, 0, 10.0], [2.0, 20, 18.0], [4.0, 40, 22.0]]),
        row("mae-pixel", 0, [[0.0, 0, 10.0], [1.0, 5, 17.0], [3.0, 15, 21.0]]),
        row("mae-pixel", 1, [[0.0, 0, 10.0], [1.0, 5, 18.0], [2.0, 10, 19.0]]),
        row("mae-ours", 0, [[0.0, 0, 10.0], [4.0, 40, 18.0]]),
        row("mae-ours", 1, [[0.0, 0, 10.0], [4.0, 40, 18.0]]),
        row("lmd-ps", 0, [[0.0, 0, 10.0], [1.0, 9, 12.0]]),  # not a headline row: does not lower the target
    ]
    # The floor is 16 dB; the lowest headline peak is 18 (mae-ours): 3/4 of the way is 17.5 dB.
    target = target_psnr(rows, floor=16.0, fraction=0.75, methods=HEADLINE_METHODS)
    assert target == pytest.approx(17.5)
    assert target_psnr(rows, floor=18.5, fraction=0.75, methods=HEADLINE_METHODS) is None  # a run never passed it
    with pytest.raises(ValueError, match="floor"):
        target_psnr(rows, fraction=0.5)
    add_time_to_target(rows, target)
    headline = seeded_speedup(rows)
    # Interpolated crossings of 17.5 dB: mae-pixel 1.25 s (seed 0) and 0.9375 s (seed 1); mae-ours 3.75 s twice.
    assert headline["reference"] == "mae-pixel" and "mae-ours" in headline["other_references"]
    # lmd-cs: 0.9375 s (seed 0) and 1.875 s (seed 1) -> ratios 0.75 and 2.
    assert sorted(r["time_ratio"] for r in headline["per_seed"]) == pytest.approx([0.75, 2.0])
    assert headline["time_ratio"] == pytest.approx((0.75 + 2.0) / 2) and headline["num_seeds"] == 2
    assert headline["time_ratio_range"] == pytest.approx([0.75, 2.0])
    assert headline["other_references"]["mae-ours"]["time_ratio"] == pytest.approx((0.25 + 0.5) / 2)


def test_fmnist_preset_rates_overrides_and_the_like_for_like_mae(tiny_projector_path):
    preset = get_preset("fmnist-cpu")
    assert preset.data_flags[:2] == ("--dataset_name", "fashion_mnist") and preset.seeds >= 3
    assert preset.budget_s >= 120 and "--max_eval_samples" in preset.data_flags
    swept = preset.with_overrides(learning_rates={"lmd-cs": 2e-3})
    assert swept.learning_rate_for("lmd-cs") == 2e-3 and swept.learning_rate_for("mae-pixel") == preset.learning_rate
    common = swept.with_overrides(learning_rate=5e-4)  # one rate for every method replaces the swept ones
    assert common.learning_rate_for("lmd-cs") == 5e-4
    vae = load_projector(tiny_projector_path)
    small = tiny_preset(lmd_overrides={"hidden_size": 16, "decoder_hidden_size": 16})
    mae = build_method("mae-ours", small, vae)
    assert mae.space == "pixel" and mae.model.config.hidden_size == 16
    assert {mae.mask_ratio(p) for p in (0.0, 0.5, 1.0)} == {0.75}  # MAE's constant ratio, our LMDModel code
    assert mae.token_pixels == build_method("lmd-cs", small, vae).token_pixels  # the same tokens as LMD
    assert build_method("mae-pixel", small, vae).model.config.hidden_size == 16


@pytest.mark.slow
def test_script_sweep_reuse_and_seeds(tiny_projector_path, tmp_path):
    """--sweep_learning_rates with --jobs 2, a second sweep merged in with --reuse_rows, and a seeded run."""
    script = os.path.join(REPO, "benchmarks", "bench_efficiency.py")
    work, sweep_json = tmp_path / "work", tmp_path / "sweep.json"
    common = ["--preset", "cpu", "--projector_path", tiny_projector_path, "--budget_s", "0.3", "--resolution", "16"]
    common += ["--train_batch_size", "4", "--lmd_preset", "tiny", "--num_evals", "1", "--demo_crops_per_photo", "4"]
    common += ["--work_dir", str(work), "--no-throughput", "--num_threads", "1", "--clock", "cpu"]

    def run(*flags):
        subprocess.run([sys.executable, script, *common, *flags], check=True, capture_output=True, timeout=300)

    run("--output", str(sweep_json), "--methods", "lmd-cs", "--sweep_learning_rates", "1e-3", "2e-3", "--jobs", "2")
    first = json.loads(sweep_json.read_text())
    runs = first["sweep"]["lmd-cs"]["runs"]
    assert [r["learning_rate"] for r in runs] == [1e-3, 2e-3] and first["chosen"]["lmd-cs"] in (1e-3, 2e-3)
    row_file = work / "rows" / "lmd-cs-seed0-lr0.001.json"
    stamp = row_file.stat().st_mtime_ns
    run(
        "--output", str(sweep_json), "--methods", "lmd-cs", "mae-ours", "--sweep_learning_rates", "1e-3", "--reuse_rows"
    )
    merged = json.loads(sweep_json.read_text())
    assert set(merged["chosen"]) == {"lmd-cs", "mae-ours"}  # the second sweep added mae-ours, kept lmd-cs
    assert row_file.stat().st_mtime_ns == stamp  # the existing run was reused, not trained again
    output = tmp_path / "seeded.json"
    run("--output", str(output), "--methods", "lmd-cs", "lmd-ps", "--seeds", "2", "--jobs", "2")
    result = json.loads(output.read_text())
    # Headline rows run every seed, the others the first (lmd-cs seed 0 at the preset's rate is a new run).
    assert [(r["method"], r["seed"]) for r in result["rows"]] == [("lmd-cs", 0), ("lmd-cs", 1), ("lmd-ps", 0)]
    assert result["seeds"] == 2 and "target_rule" in result
