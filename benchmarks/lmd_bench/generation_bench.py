"""The generation benchmark end to end: the methods by key, the metric's floor, every row, the result dict.

The rows: ``lmd-mse`` and ``lmd-diffusion`` (LMD's two heads), ``ddpm-pixel`` and ``ldm-latent`` (class-conditional
``UNet2DModel`` DDPMs on pixels and on the projector's latents) and ``amused-tokens`` (aMUSEd's ``UVit2DModel`` on the
projector's VQ codes). Each method's final (EMA) model can be saved in its own diffusers layout (``save_dir``).

``benchmarks/bench_generation.py`` is the command line (outputs, plots, grids); this module is what it and the
tests run, so the benchmark is one piece of library code.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time

import torch
from diffusers import DDPMScheduler, UNet2DModel

from diffusers_lmd.environment import describe_hardware, git_commit
from diffusers_lmd.metrics import FID_NAME, FeatureClassifier, GenerationScorer, degradation_fids
from diffusers_lmd.projector import Projector, downsample_factor, latent_channels

from .budget import DEFAULT_RUN, RunSettings
from .generation_amused import AmusedTokensMethod, build_amused_generation_method
from .generation_lmd import LMD_HEADS, LMDGenerationMethod, build_lmd_generation_method
from .generation_loop import GenerationData, fid_floor, train_generator_for_budget
from .generation_methods import (
    CLASS_LABELS_FILE,
    LATENT_NOISE_SCHEDULE,
    PIXEL_NOISE_SCHEDULE,
    ConditionalDiffusionMethod,
    GenerationMethod,
    read_class_labels,
)
from .generation_presets import GenerationPreset
from .generation_report import add_time_to_fid, fid_target

GENERATION_METHODS = ("lmd-mse", "lmd-diffusion", "lmd-categorical", "ddpm-pixel", "ldm-latent", "amused-tokens")


def check_generation_methods(names: list[str] | tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming unknown or repeated method keys."""
    unknown = [n for n in names if n not in GENERATION_METHODS]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"Methods must be distinct keys of {list(GENERATION_METHODS)}, got {list(names)}.")


def build_generation_method(name: str, preset: GenerationPreset, vae: Projector, image_size: int, seed: int = 0):
    """The method ``name`` at the preset's size for ``vae``'s latents, weights seeded by ``seed``."""
    check_generation_methods([name])
    torch.manual_seed(seed)
    k = preset.num_classes
    if name in LMD_HEADS:
        return build_lmd_generation_method(name, preset, vae, image_size, seed)
    if name == "amused-tokens":
        return build_amused_generation_method(preset, vae, image_size, name)
    if name == "ldm-latent":
        channels, size = latent_channels(vae), image_size // downsample_factor(vae)
        unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, num_class_embeds=k + 1,
                           **preset.unet_latent)  # fmt: skip
        return ConditionalDiffusionMethod(
            name, unet, "latent", k, DDPMScheduler(**LATENT_NOISE_SCHEDULE), vae, preset.label_dropout,
            preset.ddim_steps,
        )  # fmt: skip
    unet = UNet2DModel(sample_size=image_size, in_channels=3, out_channels=3, num_class_embeds=k + 1,
                       **preset.unet_pixel)  # fmt: skip
    return ConditionalDiffusionMethod(
        name, unet, "pixel", k, DDPMScheduler(**PIXEL_NOISE_SCHEDULE), None, preset.label_dropout, preset.ddim_steps
    )


def load_generation_method(folder: str) -> GenerationMethod:
    """A final model the benchmark saved under ``<work_dir>/models/<method>``, read back by its method's own
    loader (the method named in its ``class_labels.json``), with the sampler setting it was scored with."""
    if not os.path.isfile(os.path.join(folder, CLASS_LABELS_FILE)):
        raise ValueError(f"{folder} has no {CLASS_LABELS_FILE}: pass a folder the generation benchmark saved "
                         f"(<work_dir>/models/<method>).")  # fmt: skip
    name = read_class_labels(folder)["method"]
    check_generation_methods([name])
    if name in LMD_HEADS:
        return LMDGenerationMethod.from_pretrained(folder)
    if name == "amused-tokens":
        return AmusedTokensMethod.from_pretrained(folder, name)
    return ConditionalDiffusionMethod.from_pretrained(folder)


def load_classifier(path: str, device: torch.device | str = "cpu") -> tuple[FeatureClassifier, dict]:
    """The committed feature classifier and its recorded metrics (``classifier_metrics.json``, when present)."""
    if not os.path.isdir(path):
        raise ValueError(
            f"No feature classifier at {path}: train one with `python training/train_feature_classifier.py "
            f"--output_dir {path}` or pass --classifier_path."
        )
    classifier = FeatureClassifier.from_pretrained(path).to(device).eval()
    info = {"path": path}
    metrics = os.path.join(path, "classifier_metrics.json")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            recorded = json.load(f)
        info.update({k: recorded[k] for k in ("test_accuracy", "train_cpu_s", "command") if k in recorded})
    return classifier, info


def _rounded(values: dict) -> str:
    return json.dumps({k: round(v, 3) for k, v in values.items()})


def run_generation_benchmark(
    preset: GenerationPreset,
    methods: list[str],
    vae: Projector,
    data: GenerationData,
    classifier: FeatureClassifier,
    run: RunSettings = DEFAULT_RUN,
    repo: str | None = None,
    log=print,
    save_dir: str | None = None,
) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Train and score every method in turn (same data, budget, guidance, sample count and metric).

    With ``save_dir``, each method's final model (its EMA weights, the ones scored) is saved to
    ``<save_dir>/<method>`` by its ``save_pretrained``.

    Returns the result (``rows`` per method, the metric's floor at the curve's and the final sample count,
    the FID target every method reaches and each one's time to it, hardware, commit, configuration) and each
    method's final ``(images, labels)`` for the grids.
    """
    preset.check()
    check_generation_methods(methods)
    if data.num_classes != preset.num_classes:
        raise ValueError(f"The data has {data.num_classes} classes, the preset {preset.num_classes}.")
    start = time.perf_counter()
    scorer = GenerationScorer(classifier, data.test.images, reference_labels=data.test.labels)
    floor = fid_floor(data, scorer, tuple(sorted({preset.eval_samples, preset.final_samples})))
    log(f"metric floor: {_rounded({k: v['fid'] for k, v in floor.items()})}")
    reference = data.balanced_train_subset(preset.final_samples)
    checks = degradation_fids(scorer, reference.images, reference.labels)
    log(f"metric checks ({preset.final_samples} training images): {_rounded(checks)}")
    image_size = data.data.train_images.shape[-1]
    rows, samples = [], {}
    for name in methods:
        method = build_generation_method(name, preset, vae, image_size, seed=run.seed)
        log(f"{name}: training for {preset.budget_s:g} s ({run.clock} clock)")
        method_start = time.perf_counter()
        folder = os.path.join(save_dir, name) if save_dir else None
        row, images, labels = train_generator_for_budget(method, data, preset, scorer, run, save_dir=folder)
        row["wall_s"] = round(time.perf_counter() - method_start, 1)  # training, sampling and scoring
        log(f"{name}: {row['steps']} steps, FID {row['fid']:.2f}, conditional accuracy "
            f"{row['conditional_accuracy']:.3f}, {row['samples_per_s']:.1f} samples/s")  # fmt: skip
        if folder:
            log(f"{name}: final model saved to {folder}")
        rows.append(row)
        samples[name] = (images, labels)
        del method
        gc.collect()
    target = fid_target(rows)
    add_time_to_fid(rows, target)
    result = {
        "benchmark": "generation",
        "metric": FID_NAME,
        "preset": preset.name,
        "budget_s": preset.budget_s,
        "clock": run.clock,
        "hardware": describe_hardware(torch.device(run.device)),
        "commit": git_commit(repo) if repo else None,
        "torch": torch.__version__,
        "fid_floor": floor,
        "metric_checks": {"num_samples": preset.final_samples, **checks},
        "fid_target": target,
        "num_train_images": len(data.data),
        "num_test_images": len(data.test),
        "guidance": {"guidance_scale": preset.guidance_scale, "label_dropout": preset.label_dropout},
        "config": dataclasses.asdict(preset),
        "rows": rows,
        "total_s": round(time.perf_counter() - start, 1),
    }
    return result, samples
