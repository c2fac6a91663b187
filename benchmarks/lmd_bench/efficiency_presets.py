"""Sizes of the training-efficiency benchmark: a CPU run for two cores and the paper-scale GPU run.

Every method of a preset sees the same images, batch size, optimiser, learning rate and wall-clock budget.
The ViTs share one architecture (the LMD preset's widths and depths); the pixel ViTs use patches of
``f * patch_size`` pixels, so every ViT method has the same number of tokens per image as LMD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers_lmd.training.args.demo import DEMO_VIT

from .presets import BudgetPreset, pick_preset, unet_config


@dataclass(frozen=True, kw_only=True)
class EfficiencyPreset(BudgetPreset):
    """One benchmark configuration (the shared fields are :class:`~lmd_bench.presets.BudgetPreset`'s).

    Args:
        resolution: image side in pixels.
        num_evals: held-out PSNR evaluations per run, evenly spaced in training time (plus one at time 0).
        projector_args: flags for ``training/train_projector.py`` (architecture and steps), used when no trained
            projector is given.
        default_projector: a projector folder (relative to the repository) trained beforehand by
            ``train_projector.py`` that the benchmark uses when it exists, reporting its recorded training cost.
        demo_crops_per_photo / demo_eval_crops: size of the built-in demo data.
        data_flags: data flags (``add_data_args``'s, e.g. ``--dataset_name fashion_mnist``) of a real data set;
            empty for the built-in demo photos. ``--resolution`` and ``--data_seed`` are added by the benchmark.
        learning_rates: per-method peak rates chosen by a sweep (``learning_rate`` for methods not listed).
        methods: the rows a plain run trains (``None``: every method).
        seeds: training seeds of the headline rows (LMD-CS and the MAEs, plus ``seeded_methods``), for a median and
            a range; the other rows run with the first seed. The data and the evaluation set never change with it.
        seeded_methods: further rows run with every seed and compared with the MAEs like LMD-CS (a variant that
            may be faster).
        target_fraction: where the target PSNR lies between the highest trivial floor (0) and the lowest best
            PSNR of the headline runs (1); see :func:`~lmd_bench.efficiency_results.target_psnr`.

    The ViTs share one architecture (``lmd_preset`` with ``lmd_overrides``); ``unet_latent`` / ``unet_pixel`` size
    the latent / pixel U-Net methods.
    """

    resolution: int
    projector_args: tuple[str, ...]
    demo_crops_per_photo: int = 256
    demo_eval_crops: int = 32
    data_flags: tuple[str, ...] = ()
    learning_rates: dict = field(default_factory=dict)
    methods: tuple[str, ...] | None = None
    seeds: int = 1
    seeded_methods: tuple[str, ...] = ()
    target_fraction: float | None = None

    def with_overrides(self, **changes) -> EfficiencyPreset:
        """A copy with the given fields changed (``None`` values are ignored); a ``learning_rate`` override applies
        to every method, replacing the per-method rates."""
        if changes.get("learning_rate") is not None and changes.get("learning_rates") is None:
            changes["learning_rates"] = {}
        return super().with_overrides(**changes)

    def learning_rate_for(self, method: str) -> float:
        """The peak rate of ``method``: its swept rate, else the preset's common one."""
        return self.learning_rates.get(method, self.learning_rate)


PRESETS: dict[str, EfficiencyPreset] = {
    # Two CPU cores: 64-px crops, an f=4 VQ projector (16x16x4 latents, 64 tokens of patch 2), LMD "small" ViT.
    # The projector is the demo's (trained beforehand by train_projector.py) when the repository has it.
    "cpu": EfficiencyPreset(
        name="cpu",
        resolution=64,
        budget_s=60.0,
        train_batch_size=32,
        # 3e-4: the demo's sweep (600 LMD steps: 16.8 dB vs 15.9 at 1e-3); here too every method's PSNR curve is
        # steadier at 3e-4 than at 1e-3 (LMD-CS best 16.8 vs 16.5 dB, MAE 18.8 vs 18.7 dB in 60 s).
        learning_rate=3e-4,
        num_evals=24,
        lmd_preset="small",
        projector_args=(
            "--block_out_channels", "16", "32", "64", "--norm_num_groups", "16", "--latent_channels", "4",
            "--train_batch_size", "8", "--max_train_steps", "400", "--validation_steps", "200",
        ),
        default_projector="assets/demo-projector",
        unet_latent=unet_config((64, 128, 128), (False, True, True), 1),
        unet_pixel=unet_config((32, 64, 128, 128), (False, False, False, True), 1),
    ),
    # One H200: the paper's scale. 224-px crops, f=8 projector (28x28x4 latents, patch 2 = 196 tokens), ViT-B
    # (12 + 8 blocks) against transformers' ViTMAE-B/16 (also 196 tokens), U-Nets of method.md §6's size class.
    "gpu": EfficiencyPreset(
        name="gpu",
        resolution=224,
        budget_s=30.0,
        train_batch_size=128,
        learning_rate=3e-4,  # MAE's 1.5e-4 x 128/256, doubled twice for a half-minute run
        num_evals=20,
        lmd_preset="base",
        projector_args=(
            "--block_out_channels", "128", "128", "256", "256", "--latent_channels", "4", "--max_train_steps", "800",
            "--train_batch_size", "32", "--disc_start", "500", "--validation_steps", "400", "--mixed_precision", "bf16",
        ),
        unet_latent=unet_config((256, 512, 768), (False, True, True), 2),
        unet_pixel=unet_config((128, 128, 256, 256, 512, 512), (False, False, False, False, True, False), 2),
        mit_warmup_steps=10,
        mixed_precision="bf16",
    ),
}  # fmt: skip


# Fashion-MNIST on two CPU cores (method.md §8): 28x28 padded to 32x32, the committed f=2 VQ projector (16x16x4
# latents; patch 2 = 64 tokens, as pixel MAE's patch 4 on 32x32), a 4 + 2 block ViT of width 128.
PRESETS["fmnist-cpu"] = EfficiencyPreset(
    name="fmnist-cpu",
    resolution=32,
    budget_s=120.0,
    train_batch_size=64,
    learning_rate=1e-3,
    # Chosen per method by `--sweep_learning_rates` (best held-out PSNR within the same 120 CPU-s budget, rates
    # 2.5e-4..4e-3, every optimum inside the swept range): benchmarks/results/efficiency_fmnist_cpu_lr_sweep.json.
    learning_rates={
        "mae-pixel": 2e-3, "mae-ours": 1e-3, "lmd-cs": 1e-3, "lmd-ps": 1e-3, "lmd-constant": 5e-4, "lmd-pixel": 1e-3,
    },
    num_evals=16,
    lmd_preset="small",
    lmd_overrides=dict(DEMO_VIT),
    projector_args=(
        "--block_out_channels", "32", "64", "--norm_num_groups", "16", "--latent_channels", "4",
        "--num_vq_embeddings", "1024", "--train_batch_size", "64", "--disc_weight", "0", "--max_train_steps", "1500",
        "--validation_steps", "500",
    ),
    default_projector="assets/fashion-mnist-projector",
    data_flags=(
        "--dataset_name", "fashion_mnist", "--pad_to_resolution", "--random_flip", "--max_eval_samples", "1000",
    ),
    unet_latent=unet_config((64, 128, 128), (False, True, True), 1),
    unet_pixel=unet_config((32, 64, 128), (False, False, True), 1),
    methods=("mae-pixel", "mae-ours", "lmd-cs", "lmd-ps", "lmd-constant", "lmd-pixel"),
    seeds=3,
    seeded_methods=("lmd-constant",),  # LMD without the rising ratio: the faster variant in the first run
    target_fraction=0.75,
)  # fmt: skip


def get_preset(name: str) -> EfficiencyPreset:
    """The named preset, or a ``ValueError`` listing the names."""
    return pick_preset(PRESETS, name, "efficiency")
