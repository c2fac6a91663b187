"""Sizes of the fine-tuning comparison (paper Table 2): the encoders' pre-training, their fine-tuning recipe, data.

Both encoders are pre-trained as the efficiency benchmark's methods are (:meth:`FinetunePreset.efficiency_preset`),
then fine-tuned with one recipe for one wall-clock budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .efficiency_presets import EfficiencyPreset
from .efficiency_presets import get_preset as get_efficiency_preset
from .presets import BenchmarkPreset, pick_preset

PRETRAIN_METHODS = {"lmd-cs": "lmd-cs", "mae": "mae-pixel"}  # our row -> efficiency-benchmark method


@dataclass(frozen=True, kw_only=True)
class FinetunePreset(BenchmarkPreset):
    """One configuration of the comparison; every number applies to both methods (the shared fields are
    :class:`~lmd_bench.presets.BenchmarkPreset`'s).

    Args:
        resolution: image side in pixels (MNIST digits are resized and converted to RGB).
        The defaults of the resolution, batch sizes and rates are the two-core CPU recipe both CPU presets share.
        lmd_preset: ``LMDModel`` preset of both encoders; the ViT gets the same widths, depths and heads.
        patch_size: latent patch side of LMD; the ViT's pixel patch is ``f x patch_size`` (same token count).
        pretrain_s / finetune_s: wall-clock seconds of pre-training / fine-tuning per method.
        pretrain_batch_size / pretrain_learning_rate: the pre-training loop's batch and AdamW rate.
        finetune_batch_size / finetune_learning_rate / layer_decay / lr_warmup_steps: the fine-tuning recipe
            (AdamW 0.9/0.999, weight decay 0.05, constant rate after warm-up, layer-wise LR decay).
        eval_steps: fine-tuning steps between top-1/top-5 evaluations (the resolution of MAT@k).
        num_pretrain_evals / pretrain_eval_images: held-out PSNR points of pre-training (besides the one at time
            0) and the images they use; context only, so kept cheap.
        max_eval_samples: held-out digits evaluated.
        projector_path: the projector to use, relative to the repository (``None``: train one on the digits).
        projector_args: ``training/train_projector.py`` flags used when the projector has to be trained.
        efficiency_base: pre-train exactly as this efficiency-benchmark preset does (its architecture overrides and
            swept per-method rates), with this preset's budget, batch and evaluation sizes.
        data_flags: data flags of a real labelled data set (``add_data_args``'s); empty for the MNIST digits.
        pretrain_methods: fine-tuning row -> efficiency-benchmark method that pre-trains its encoder.
    """

    resolution: int = 32
    pretrain_s: float
    finetune_s: float
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 1e-3
    finetune_batch_size: int = 64
    finetune_learning_rate: float = 1e-3
    eval_steps: int
    layer_decay: float = 0.75
    max_eval_samples: int = 1000
    num_pretrain_evals: int = 1
    pretrain_eval_images: int = 200
    projector_path: str | None = None
    projector_args: tuple[str, ...] = field(default_factory=tuple)
    efficiency_base: str | None = None
    data_flags: tuple[str, ...] = ()
    pretrain_methods: dict = field(default_factory=lambda: dict(PRETRAIN_METHODS))

    def efficiency_preset(self) -> EfficiencyPreset:
        """The pre-training configuration in the efficiency benchmark's terms."""
        if self.efficiency_base is not None:
            return get_efficiency_preset(self.efficiency_base).with_overrides(
                name=f"finetune-{self.name}",
                budget_s=self.pretrain_s,
                train_batch_size=self.pretrain_batch_size,
                num_evals=self.num_pretrain_evals,
            )
        return EfficiencyPreset(
            name=f"finetune-{self.name}",
            resolution=self.resolution,
            budget_s=self.pretrain_s,
            train_batch_size=self.pretrain_batch_size,
            learning_rate=self.pretrain_learning_rate,
            num_evals=self.num_pretrain_evals,
            lmd_preset=self.lmd_preset,
            projector_args=self.projector_args,
            patch_size=self.patch_size,
            lr_warmup_steps=self.lr_warmup_steps,
            mixed_precision=self.mixed_precision,
        )


PRESETS: dict[str, FinetunePreset] = {
    # Two shared CPU cores: 32-px digits through the committed demo projector (f=4, trained on photos, not
    # digits: 8x8x4 latents, 16 tokens of patch 2; the ViT has 16 tokens of 8x8 pixels). The encoders are the
    # "tiny" preset (2 blocks of width 32): the "small" one gets only ~20 steps per minute on two busy cores,
    # too few for an accuracy curve. Without the demo projector, a small one is trained on the digits (200 steps,
    # reconstruction losses only: the latents need to carry the digit, not look sharp).
    "cpu": FinetunePreset(
        name="cpu",
        lmd_preset="tiny",
        pretrain_s=90.0,
        finetune_s=75.0,
        eval_steps=20,
        projector_path="assets/demo-projector",
        projector_args=(
            "--block_out_channels", "16", "32", "64", "--norm_num_groups", "16", "--no_mid_block_attention",
            "--latent_channels", "4", "--num_vq_embeddings", "256", "--max_train_steps", "200",
            "--train_batch_size", "16", "--learning_rate", "1e-3", "--disc_start", "1000000",
            "--validation_steps", "200",
        ),
    ),
    # One H200: 64-px digits, 16x16x4 latents (64 tokens) against a ViT with 8-px patches (64 tokens), ViT-B
    # encoders (12 blocks of width 768) in bf16.
    "gpu": FinetunePreset(
        name="gpu",
        resolution=64,
        lmd_preset="base",
        pretrain_s=240.0,
        finetune_s=120.0,
        pretrain_batch_size=256,
        pretrain_learning_rate=1.5e-4 * 256 / 256 * 2,
        finetune_batch_size=256,
        finetune_learning_rate=5e-4,
        eval_steps=10,
        layer_decay=0.65,
        projector_args=(
            "--block_out_channels", "64", "128", "128", "--latent_channels", "4", "--num_vq_embeddings", "1024",
            "--max_train_steps", "1500", "--train_batch_size", "64", "--learning_rate", "5e-4", "--disc_start", "1000",
            "--validation_steps", "1500", "--mixed_precision", "bf16",
        ),
        mixed_precision="bf16",
    ),
}  # fmt: skip

# Fashion-MNIST on two CPU cores: encoders pre-trained exactly as in the efficiency benchmark's fmnist-cpu preset
# (same ViT, projector, swept rates and 120 s budget), then fine-tuned on the training labels, scored on a fixed
# 2,000-image subset of the test split. Both MAEs of that benchmark are pre-trained: transformers' ViTMAE and our
# LMDModel on pixels at 0.75. Fine-tuning runs 240 s (~550 steps, 0.6 epoch): at 90 s (200 steps) every encoder,
# the untrained one included, was still within a few points of the others.
PRESETS["fmnist-cpu"] = FinetunePreset(
    name="fmnist-cpu",
    lmd_preset="small",
    pretrain_s=120.0,
    finetune_s=240.0,
    eval_steps=25,
    max_eval_samples=2000,
    projector_path="assets/fashion-mnist-projector",
    efficiency_base="fmnist-cpu",
    data_flags=("--dataset_name", "fashion_mnist", "--pad_to_resolution"),
    pretrain_methods={"lmd-cs": "lmd-cs", "mae": "mae-pixel", "mae-ours": "mae-ours"},
)


def get_preset(name: str) -> FinetunePreset:
    """The named preset, or a ``ValueError`` listing the names."""
    return pick_preset(PRESETS, name, "fine-tuning")
