"""Sizes of the generation benchmark (paper Tables 3 and 4, measured): Fashion-MNIST, class-conditional.

Every method of a preset trains on the same 60,000 images in the same order with the same flips, batch size,
optimiser (AdamW as in the efficiency benchmark), weight EMA, label dropout and wall-clock budget, and is
sampled with one guidance scale and scored on the same number of samples by the same classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers_lmd.training.args.demo import DEMO_VIT

from .presets import BudgetPreset, pick_preset, unet_config

# lmd-mse is LMD-CS: the paper's cosine rise, to 1.0 instead of 0.75 so the fully masked start is trained;
# lmd-diffusion trains as MAR does its diffusion head (a truncated normal over [0.7, 1.0], a fresh ratio per step), and
# lmd-categorical likewise (MaskGIT's and MAR's high ratios: generation starts fully masked).
DEFAULT_LMD_SCHEDULES = {
    "lmd-mse": ("cosine", 0.15, 1.0),
    "lmd-diffusion": ("truncnorm", 0.7, 1.0),
    "lmd-categorical": ("truncnorm", 0.7, 1.0),
}
# Head sizes per LMD method. The diffusion head as MAR configures it (4 noised copies of each token, as wide as the
# decoder) costs 3.55x an MSE step at this size; one copy and width 64 cost 1.30x (bench_step --preset fmnist
# --head_type diffusion, docs/benchmarks.md), and the demo's run of that head learned (docs/training.md).
DEFAULT_LMD_HEADS = {"lmd-diffusion": dict(diffusion_batch_mul=1, diffusion_head_width=64)}

# amused-tokens on the Fashion-MNIST CPU preset: aMUSEd's UVit2DModel shrunk to LMD's class (1.35 M parameters with
# the 1,024-code vocabulary and the class table, against LMD's 1.21 M). The f=2 projector's 16x16 code grid is
# downsampled once (aMUSEd-512's layout), so the three width-128 transformer layers see 8x8 = 64 tokens, as LMD's
# ViT sees 64 patches; one ConvNeXt + attention block of width 64 on each side, a 32-wide token embedding.
AMUSED_FMNIST_CPU = dict(
    hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
    encoder_hidden_size=128, cond_embed_dim=128, micro_cond_encode_dim=16, micro_cond_embed_dim=80,
    in_channels=32, block_out_channels=64, num_res_blocks=1, block_num_heads=2, downsample=True, upsample=True,
    use_bias=False,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class GenerationPreset(BudgetPreset):
    """One generation-benchmark configuration (the shared fields are :class:`~lmd_bench.presets.BudgetPreset`'s:
    every method's optimiser is AdamW 0.9/0.95, weight decay 0.05, constant after the warm-up).

    Args:
        ema_decay: the largest decay of the weights' EMA (diffusers' ``EMAModel`` with warm-up), sampled from for
            every method; ``0`` samples the raw weights.
        num_evals: scored points of the FID curve, evenly spaced in training time, the last at the end.
        eval_samples: samples per curve point; final_samples: samples of the final score (both class-balanced).
        guidance_scale: classifier-free guidance of every method (1 = none); label_dropout: its training side.
        ddim_steps: DDIM steps of the U-Nets; lmd_steps: LMD's reveal steps; lmd_head_steps: its diffusion head's
            DDIM steps; lmd_temperature: the diffusion head's sampling-noise scale and the categorical head's
            logit temperature (1: the model's own distribution).
        lmd_heads: per LMD method, ``LMDModel`` head arguments (the diffusion head's size).
        lmd_schedules: per LMD method, the training mask-ratio ``(schedule, min, max)``; all reach 1.0, since
            generation starts from a fully masked latent.
        unet_pixel / unet_latent: ``UNet2DModel`` architecture of DDPM (32x32x3) and LDM (on the latents).
        amused_config: ``UVit2DModel`` architecture of ``amused-tokens`` (``codebook_size``, ``vocab_size`` and
            ``sample_size`` come from the projector); amused_condition_tokens: its class condition tokens
            (``encoder_hidden_states``); amused_steps: its MaskGIT decoding steps; amused_temperature:
            ``AmusedScheduler``'s linear ``(start, end)`` re-masking temperature (aMUSEd's default ``(2, 0)``).
        default_projector / default_classifier: committed folders (relative to the repository).
        max_train_samples: train on a seeded subset (smoke tests); ``None`` = all 60,000.
        sample_batch_size: images per sampling call.
    """

    eval_samples: int
    final_samples: int
    guidance_scale: float = 1.0
    label_dropout: float = 0.0
    ema_decay: float = 0.9999
    ddim_steps: int = 50
    lmd_steps: int = 16
    lmd_head_steps: int = 50
    lmd_temperature: float = 1.0
    lmd_schedules: dict = field(default_factory=lambda: dict(DEFAULT_LMD_SCHEDULES))
    lmd_heads: dict = field(default_factory=lambda: dict(DEFAULT_LMD_HEADS))
    amused_config: dict = field(default_factory=dict)
    amused_condition_tokens: int = 2
    amused_steps: int = 16
    amused_temperature: tuple[float, float] = (2.0, 0.0)
    lr_warmup_steps: int = 100
    sample_batch_size: int = 250
    max_train_samples: int | None = None
    default_projector: str = "assets/fashion-mnist-projector"
    default_classifier: str = "assets/fashion-mnist-classifier"
    num_classes: int = 10

    def check(self) -> None:
        """Raise a ``ValueError`` naming the first setting that cannot work."""
        super().check()
        k = self.num_classes
        if self.eval_samples < 2 * k or self.eval_samples % k or self.final_samples % k:
            raise ValueError(
                f"eval_samples ({self.eval_samples}) and final_samples ({self.final_samples}) must be multiples of "
                f"the {k} classes (class-balanced sets), eval_samples at least {2 * k}."
            )
        if self.final_samples < self.eval_samples:
            raise ValueError(
                f"final_samples ({self.final_samples}) must be at least eval_samples ({self.eval_samples}): the "
                "curve's last point is scored on the first eval_samples of the final samples."
            )
        if self.guidance_scale < 1.0 or not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(
                f"guidance_scale must be >= 1 and label_dropout in [0, 1), got {self.guidance_scale}, "
                f"{self.label_dropout}."
            )
        if self.guidance_scale > 1.0 and self.label_dropout == 0.0:
            raise ValueError("guidance_scale > 1 needs label_dropout > 0: nothing would train the null class.")
        if self.lmd_temperature <= 0:
            raise ValueError(f"lmd_temperature must be > 0, got {self.lmd_temperature}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}.")
        if self.amused_steps < 1 or self.amused_condition_tokens < 1:
            raise ValueError(f"amused_steps and amused_condition_tokens must be positive, got {self.amused_steps}, "
                             f"{self.amused_condition_tokens}.")  # fmt: skip


GENERATION_PRESETS: dict[str, GenerationPreset] = {
    # Two CPU cores, one thread per method, 600 CPU-s of training each (180 s was too early for any method to draw
    # images anyone keeps). Every method trains with label dropout 0.1 and samples with guidance 3 (DiT's habit).
    # 20 denoising steps for every sampler (the U-Nets' DDIM steps, LMD's diffusion-head steps); LMD and aMUSEd
    # reveal their 64 tokens in 16 steps. Networks whose forward pass costs about the same per image: the efficiency
    # benchmark's Fashion-MNIST ViT (width 128, 4 + 2 blocks, 1.2 M), a 1.35 M aMUSEd UVit2DModel, a 2.8 M latent
    # U-Net on the f=2 projector's 16x16x4 latents and a 0.7 M pixel U-Net (a pixel U-Net's full-resolution
    # convolutions cost several times a ViT's per parameter). One rate for all: the short-run rate the efficiency
    # benchmark's Fashion-MNIST sweep chose.
    "fmnist-cpu": GenerationPreset(
        name="fmnist-cpu",
        budget_s=600.0,
        train_batch_size=64,
        learning_rate=1e-3,
        lr_warmup_steps=50,
        num_evals=4,
        eval_samples=200,
        final_samples=2000,
        guidance_scale=3.0,
        label_dropout=0.1,
        ddim_steps=20,
        lmd_steps=16,
        lmd_head_steps=20,
        lmd_preset="small",
        lmd_overrides=dict(DEMO_VIT),
        unet_pixel=unet_config((16, 32, 64), (False, False, True), 1),
        unet_latent=unet_config((32, 64, 128), (False, True, True), 1),
        amused_config=dict(AMUSED_FMNIST_CPU),
        amused_steps=16,
    ),
}  # fmt: skip


def get_generation_preset(name: str) -> GenerationPreset:
    """The named preset, or a ``ValueError`` listing the names."""
    return pick_preset(GENERATION_PRESETS, name, "generation")
