"""The training-efficiency benchmark (SPEC §5): every method for the same wall-clock budget, scored the same way.

``benchmarks/bench_efficiency.py`` is the command line; the pieces live here so tests and other tools share them.
"""

from .data import BenchmarkData, EpochSampler, build_benchmark_data
from .loop import evaluate_psnr, masked_latent_mse, train_for_budget
from .methods import EfficiencyMethod, LMDMethod, ViTMAEMethod, mask_ratio_at
from .presets import PRESETS, EfficiencyPreset, get_preset
from .registry import LMD_SCHEDULES, MAE_FAMILY, METHODS, build_method, check_methods, vitmae_like
from .results import add_time_to_target, best_psnr, first_reach, speedup, target_psnr
from .unet_methods import DDPMMethod, MaskedUNetMethod

__all__ = [
    "LMD_SCHEDULES",
    "MAE_FAMILY",
    "METHODS",
    "PRESETS",
    "BenchmarkData",
    "DDPMMethod",
    "EfficiencyMethod",
    "EfficiencyPreset",
    "EpochSampler",
    "LMDMethod",
    "MaskedUNetMethod",
    "ViTMAEMethod",
    "add_time_to_target",
    "best_psnr",
    "build_benchmark_data",
    "build_method",
    "check_methods",
    "evaluate_psnr",
    "first_reach",
    "get_preset",
    "mask_ratio_at",
    "masked_latent_mse",
    "speedup",
    "target_psnr",
    "train_for_budget",
    "vitmae_like",
]
