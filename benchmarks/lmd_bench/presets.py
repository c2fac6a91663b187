"""What every benchmark preset shares: one frozen dataclass shape, checked overrides, lookup by name.

A preset fixes what every method of a benchmark run shares (data, model sizes, optimiser, budget), so the rows
differ only in the method. :class:`BenchmarkPreset` holds the fields of all three benchmarks' presets;
:class:`BudgetPreset` adds those of the two whose methods each train for one wall-clock budget (efficiency and
generation), which :class:`~lmd_bench.budget.BudgetLoop` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

PresetT = TypeVar("PresetT", bound="BenchmarkPreset")


@dataclass(frozen=True, kw_only=True)
class BenchmarkPreset:
    """The fields every benchmark preset has.

    Args:
        name: the preset's key, recorded in every result.
        lmd_preset: ``LMDModel`` preset of the ViTs; ``patch_size`` is LMD's latent patch side.
        lr_warmup_steps: linear warm-up steps of the AdamW rate (constant afterwards).
        mixed_precision: ``"bf16"`` autocast on CUDA, ``None`` for fp32.
    """

    name: str
    lmd_preset: str
    patch_size: int = 2
    lr_warmup_steps: int = 20
    mixed_precision: str | None = None

    def with_overrides(self: PresetT, **changes) -> PresetT:
        """A copy with the given fields changed (``None`` values are ignored), checked."""
        preset = replace(self, **{k: v for k, v in changes.items() if v is not None})
        preset.check()
        return preset

    def check(self) -> None:
        """Raise a ``ValueError`` naming the first setting that cannot work."""
        if self.patch_size < 1 or self.lr_warmup_steps < 0:
            raise ValueError(
                f"patch_size must be >= 1 and lr_warmup_steps >= 0, got {self.patch_size}, {self.lr_warmup_steps}."
            )
        if self.mixed_precision not in (None, "bf16"):
            raise ValueError(f"mixed_precision must be None or 'bf16', got {self.mixed_precision!r}.")


@dataclass(frozen=True, kw_only=True)
class BudgetPreset(BenchmarkPreset):
    """A benchmark whose every method trains for the same wall-clock budget with the same optimiser and batches.

    Args:
        budget_s: training seconds per method (evaluations pause the clock).
        train_batch_size: images per optimiser step, for every method.
        learning_rate: peak AdamW rate of every method.
        num_evals: scored points per run, evenly spaced in training time.
        mit_warmup_steps: first steps that MIT ignores.
        lmd_overrides: architecture overrides of ``lmd_preset`` (``hidden_size``, ``num_layers``...) for every ViT.
        unet_latent / unet_pixel: ``UNet2DModel`` architecture of the latent / pixel U-Net methods
            (see :func:`unet_config`).
        default_projector: a projector folder, relative to the repository, used when none is given.
    """

    budget_s: float
    train_batch_size: int
    learning_rate: float
    num_evals: int
    mit_warmup_steps: int = 5
    lmd_overrides: dict = field(default_factory=dict)
    unet_latent: dict = field(default_factory=dict)
    unet_pixel: dict = field(default_factory=dict)
    default_projector: str | None = None

    def learning_rate_for(self, method: str) -> float:
        """The peak rate of ``method``: the preset's common one."""
        return self.learning_rate

    def check(self) -> None:
        super().check()
        if self.budget_s <= 0 or self.num_evals < 1:
            raise ValueError(f"budget_s must be positive and num_evals >= 1, got {self.budget_s}, {self.num_evals}.")
        if self.train_batch_size < 1:
            raise ValueError(f"train_batch_size must be at least 1, got {self.train_batch_size}.")


def unet_config(block_out_channels: tuple[int, ...], attention: tuple[bool, ...], layers_per_block: int) -> dict:
    """``UNet2DModel`` kwargs: attention blocks where ``attention`` says, plain ResNet blocks elsewhere."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    groups = min(32, min(block_out_channels))
    return dict(
        block_out_channels=block_out_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=layers_per_block,
        norm_num_groups=groups,
    )


def pick_preset(presets: Mapping[str, PresetT], name: str, benchmark: str) -> PresetT:
    """``presets[name]``, or a ``ValueError`` naming the ``benchmark``'s presets."""
    if name not in presets:
        raise ValueError(f"Unknown {benchmark} preset {name!r}; choose one of {sorted(presets)}.")
    return presets[name]
