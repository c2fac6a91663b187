"""Projector pre-training (method.md §2): losses, adaptive weight, discriminator, one training step, the script."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, VQModel
from testing_utils import load_script

from diffusers_lmd import decode_latents, encode_images
from diffusers_lmd.data import build_demo_datasets
from diffusers_lmd.training import NonFiniteLossError
from diffusers_lmd.training.projector import (
    AutoencoderWithLoss,
    PatchDiscriminator,
    ProjectorLossConfig,
    ProjectorTrainer,
    evaluate_projector,
    train_projector,
)
from diffusers_lmd.training.projector.model import (
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    init_codebook_from_data,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "train_projector.py"
TINY = [
    "--resolution", "16", "--block_out_channels", "8", "16", "--norm_num_groups", "8", "--latent_channels", "4",
    "--num_vq_embeddings", "32", "--disc_channels", "8", "--disc_layers", "2", "--train_batch_size", "4",
    "--demo_crops_per_photo", "4", "--demo_eval_crops", "2", "--report_to", "none",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run fastest single-threaded, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_BLOCKS = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=8,
    latent_channels=4,
)


def tiny_vq() -> VQModel:
    torch.manual_seed(0)
    return VQModel(num_vq_embeddings=32, **TINY_BLOCKS)


def demo_images(n=8, resolution=16):
    train, _ = build_demo_datasets(resolution, crops_per_photo=2)
    return torch.stack([train[i]["pixel_values"] for i in range(n)])


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    last = torch.nn.Parameter(torch.randn(3, 4))
    rec = (3.0 * last).sum()  # gradient 3 everywhere
    gan = (1.5 * last).sum()  # gradient 1.5 everywhere
    gamma = adaptive_weight(rec, gan, last)
    assert gamma.item() == pytest.approx(3.0 * 12**0.5 / (1.5 * 12**0.5 + 1e-4))
    assert not gamma.requires_grad
    (rec + gamma * gan).backward()  # the graph is kept for the caller's backward
    assert torch.allclose(last.grad, torch.full_like(last, 3.0 + gamma.item() * 1.5))
    # A GAN loss that does not reach the last layer would give an infinite weight: clamped to 1e4.
    flat = torch.nn.Parameter(torch.randn(3))
    gamma = adaptive_weight((flat**2).sum(), 0.0 * flat.sum(), flat)
    assert gamma.item() == pytest.approx(min(1e4, 2 * flat.detach().norm().item() / 1e-4))
    assert adaptive_weight((flat * 1e9).sum(), flat.sum(), flat).item() == 1e4


def test_discriminator_losses():
    real, fake = torch.tensor([2.0, 1.5]), torch.tensor([-1.0, -3.0])
    assert discriminator_loss(real, fake, "hinge").item() == 0.0  # beyond the margins: nothing to learn
    assert discriminator_loss(-real, -fake, "hinge").item() > 1.0
    expected = 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.ones(2))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros(2))
    )
    assert discriminator_loss(real, fake, "vanilla").item() == pytest.approx(expected.item())
    assert generator_loss(fake, "hinge").item() == pytest.approx(2.0)
    assert generator_loss(fake, "vanilla").item() == pytest.approx(
        F.binary_cross_entropy_with_logits(fake, torch.ones(2)).item()
    )
    with pytest.raises(ValueError, match="Unknown discriminator loss"):
        discriminator_loss(real, fake, "wasserstein")


def test_patch_discriminator_shapes_and_round_trip(tmp_path):
    disc = PatchDiscriminator(base_channels=8, num_layers=2, norm_num_groups=4)
    assert disc(torch.randn(2, 3, 32, 32)).shape == (2, 1, 6, 6)  # one logit per overlapping patch
    with pytest.raises(ValueError, match="too small"):
        disc(torch.randn(1, 3, 8, 8))
    disc.save_pretrained(tmp_path)
    loaded = PatchDiscriminator.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(loaded(x), disc(x))
    with pytest.raises(ValueError, match="divisible"):
        PatchDiscriminator(base_channels=6, norm_num_groups=5)


def test_vq_regulariser_weights_codebook_by_one_and_commitment_by_beta():
    """The paper's eq. 4 (method.md §2): ||sg[E(x)] - z_q||^2 + beta ||sg[z_q] - E(x)||^2 (diffusers' legacy default
    swaps the two)."""
    vq = AutoencoderWithLoss(tiny_vq(), commitment_beta=0.25).vae
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, loss, (_, _, indices) = vq.quantize(z)
    codes = vq.quantize.embedding.weight[indices].view(2, 3, 3, 4).permute(0, 3, 1, 2).detach()
    assert loss.item() == pytest.approx(1.25 * F.mse_loss(codes, z).item(), rel=1e-5)
    loss.backward()
    # Encoder side: only the commitment term, weighted 0.25 (the straight-through z_q adds nothing here).
    assert torch.allclose(z.grad, 0.25 * 2 * (z - codes).detach() / z.numel(), atol=1e-7)
    used = torch.unique(indices)
    codebook_grad = vq.quantize.embedding.weight.grad
    expected = torch.zeros_like(codebook_grad)
    flat_z, flat_codes = z.detach().permute(0, 2, 3, 1).reshape(-1, 4), codes.permute(0, 2, 3, 1).reshape(-1, 4)
    expected.index_add_(0, indices.flatten(), 2 * (flat_codes - flat_z) / z.numel())  # weight 1 on the codebook term
    assert torch.allclose(codebook_grad[used], expected[used], atol=1e-7)


def test_codebook_starts_from_encoder_outputs():
    vq = tiny_vq()
    images = demo_images(4)
    before = evaluate_projector(vq, [images])["codebook_usage"]
    init_codebook_from_data(vq, images, torch.Generator().manual_seed(0))
    vectors = vq.encode(images).latents.permute(0, 2, 3, 1).reshape(-1, 4)
    distances = torch.cdist(vq.quantize.embedding.weight, vectors, compute_mode="donot_use_mm_for_euclid_dist")
    distances = distances.min(dim=1).values
    assert distances.max() < 1e-5  # every code is one of the encoder's outputs
    assert evaluate_projector(vq, [images])["codebook_usage"] > 2 * before
    few = demo_images(1)[:, :, :8, :8]  # 4 latent vectors for 32 codes: repeated with jitter, all distinct
    init_codebook_from_data(vq, few, torch.Generator().manual_seed(0))
    assert len(torch.unique(vq.quantize.embedding.weight, dim=0)) == 32


def test_kl_wrapper_returns_a_scaled_kl():
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_BLOCKS)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    reconstruction, reg = AutoencoderWithLoss(vae, kl_weight=1.0)(x)
    assert reconstruction.shape == x.shape
    expected = vae.encode(x).latent_dist.kl().mean() / x[0].numel()
    assert reg.item() == pytest.approx(expected.item(), rel=1e-5) and reg.item() > 0


def make_trainer(config: ProjectorLossConfig, lr=3e-3):
    accelerator = Accelerator(cpu=True)
    autoencoder = AutoencoderWithLoss(tiny_vq())
    disc = PatchDiscriminator(base_channels=8, num_layers=2, norm_num_groups=4)
    opt = torch.optim.Adam(autoencoder.parameters(), lr=lr, betas=(0.5, 0.9))
    disc_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.9))
    prepared = accelerator.prepare(autoencoder, disc, opt, disc_opt)
    return ProjectorTrainer(accelerator, *prepared, config=config)


def test_training_steps_reduce_the_loss_and_raise_psnr():
    images = demo_images()
    trainer = make_trainer(ProjectorLossConfig(disc_weight=0.0))
    vae = trainer.accelerator.unwrap_model(trainer.autoencoder).vae
    before = evaluate_projector(vae, [images])["eval_psnr"]
    losses = [trainer.step(images, step)["rec_loss"] for step in range(40)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    after = evaluate_projector(vae, [images])
    assert after["eval_psnr"] > before + 3.0
    assert 0.0 < after["codebook_usage"] <= 1.0


def test_discriminator_waits_for_its_warm_up():
    images = demo_images(4)
    trainer = make_trainer(ProjectorLossConfig(disc_start=2, disc_weight=1.0))
    disc = trainer.accelerator.unwrap_model(trainer.discriminator)
    initial = [p.detach().clone() for p in disc.parameters()]
    for step in range(2):
        logs = trainer.step(images, step)
        assert "disc_loss" not in logs and "gan_loss" not in logs
    assert all(torch.equal(a, b) for a, b in zip(initial, disc.parameters()))
    logs = trainer.step(images, 2)
    assert {"disc_loss", "gan_loss", "adaptive_weight"} <= logs.keys()
    assert 0.0 <= logs["adaptive_weight"] <= 1e4
    assert any(not torch.equal(a, b) for a, b in zip(initial, disc.parameters()))
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen after the autoencoder's step


def test_non_finite_loss_stops_before_any_update():
    trainer = make_trainer(ProjectorLossConfig(disc_weight=0.0))
    vae = trainer.accelerator.unwrap_model(trainer.autoencoder).vae
    weights = [p.detach().clone() for p in vae.parameters()]
    images = demo_images(2)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="autoencoder loss is nan"):
        trainer.step(images, 0)
    assert all(torch.equal(a, b) for a, b in zip(weights, vae.parameters()))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resolution", "30", "--block_out_channels", "32", "32", "32"], "not divisible by the downsampling"),
        (["--block_out_channels", "24", "64"], "not divisible by --norm_num_groups"),
        (["--resolution", "16", "--disc_layers", "3"], "too small for a 3-layer"),
        (["--disc_start", "-1"], "--disc_start"),
        (["--saturation_jitter", "1.5"], "--saturation_jitter"),
    ],
)
def test_bad_projector_flags_fail_before_training(argv, message, tmp_path):
    args = load_script("train_projector").parse_args(["--output_dir", str(tmp_path), "--report_to", "none", *argv])
    with pytest.raises(ValueError, match=message):
        train_projector(args)
    assert not os.path.exists(tmp_path / "config.json")


def test_kl_projector_trains_and_stores_shift(tmp_path):
    argv = [*TINY, "--projector_type", "kl", "--max_train_steps", "2", "--output_dir", str(tmp_path)]
    result = train_projector(load_script("train_projector").parse_args(argv))
    vae = AutoencoderKL.from_pretrained(tmp_path)
    assert vae.config.scaling_factor == pytest.approx(result["scaling_factor"])
    assert vae.config.shift_factor == pytest.approx(result["shift_factor"])


@pytest.mark.slow
def test_script_end_to_end_with_accelerate_launch_and_resume(tmp_path):
    out = tmp_path / "projector"
    common = [*TINY, "--output_dir", str(out), "--checkpointing_steps", "2", "--validation_steps", "2"]
    common += ["--random_flip", "--color_augment", "--saturation_jitter", "0.2"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"]
    launch += ["--mixed_precision", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [*launch, str(SCRIPT), *common, "--max_train_steps", "3", "--disc_start", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert "held-out PSNR:" in first.stdout
    assert (out / "checkpoint-2").is_dir()

    # Resume from the checkpoint at step 2 and continue to step 5 (in-process: the same code, one import less).
    resume = load_script("train_projector").parse_args(
        [*common, "--max_train_steps", "5", "--disc_start", "1", "--resume_from_checkpoint", "latest"]
    )
    train_projector(resume)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]

    vq = VQModel.from_pretrained(out)
    metrics = json.loads((out / "projector_metrics.json").read_text())
    assert vq.config.scaling_factor == pytest.approx(metrics["scaling_factor"])
    assert vq.config.scaling_factor != VQModel().config.scaling_factor
    assert metrics["global_step"] == 5 and metrics["eval_psnr"] > 0
    assert (out / "diffusion_pytorch_model.safetensors").is_file() and (out / "README.md").is_file()
    # The stored statistics normalise the training latents and the folder round-trips through the projector API.
    train, _ = build_demo_datasets(16, crops_per_photo=4)
    images = torch.stack([train[i]["pixel_values"] for i in range(len(train))])
    latents = encode_images(vq, images)
    assert 0.7 < latents.std().item() < 1.3
    assert decode_latents(vq, latents).shape == images.shape


@pytest.mark.slow
def test_script_runs_data_parallel_on_two_processes(tmp_path):
    """Two gloo processes: the discriminator frozen inside the autoencoder's DDP step, losses reduced, one log."""
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT), *TINY,
         "--output_dir", str(tmp_path), "--max_train_steps", "2", "--disc_start", "1", "--validation_steps", "2"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # written once, by the main process
    assert "disc_loss" in records[1] and "eval_psnr" in records[1]
    assert run.stdout.count("held-out PSNR:") == 1
    VQModel.from_pretrained(tmp_path)


def test_parser_defaults_are_the_projector_recipe():
    args = load_script("train_projector").parse_args([])
    assert (args.adam_beta1, args.adam_beta2, args.adam_weight_decay) == (0.5, 0.9, 0.0)
    assert args.projector_type == "vq" and args.output_dir == "projector-output"
    assert isinstance(args, argparse.Namespace)
