"""Training-step throughput: ``LMDModel`` against transformers' ``ViTMAEForPreTraining`` at the same shape.

One step is forward, backward and AdamW (bf16 autocast and fused AdamW on GPU, fp32 on CPU). Both models see
the same latent grid (ViTMAE gets it as ``pixel_values`` with ``num_channels`` = latent channels), the same
token count, widths, depths, heads and mask ratio, so the rows compare implementations, not architectures.
Throughput is the median over timed steps after warm-up (CUDA events on GPU); TFLOP/s divides the FLOPs that
``torch.utils.flop_counter.FlopCounterMode`` counts on one step by that median.

    python benchmarks/bench_step.py --preset cpu --output benchmarks/results/bench_step_cpu.json
    python benchmarks/bench_step.py --preset gpu --output benchmarks/results/bench_step_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from diffusers_lmd import LMDModel
from diffusers_lmd.environment import describe_hardware, git_commit
from diffusers_lmd.models.diffusion_head import HEAD_TYPES
from diffusers_lmd.projector import Projector, downsample_factor, latent_channels
from diffusers_lmd.training.args import add_projector_args, projector_kwargs
from diffusers_lmd.training.args.demo import DEMO_VIT
from diffusers_lmd.training.args.lmd import DIFFUSION_HEAD_OVERRIDES
from diffusers_lmd.training.projector import build_projector
from lmd_bench.budget import CLOCKS
from lmd_bench.efficiency_presets import get_preset
from lmd_bench.efficiency_report import throughput_table
from lmd_bench.throughput import device_matmul_ceiling, lmd_cost_per_image, step_flops

PRESETS: dict[str, dict] = {
    # Small enough that the whole run (12 measurements, 6 compilations) fits in about three minutes on 2 cores.
    "cpu": dict(latent_channels=4, latent_size=16, patch_size=2, hidden_size=128, num_layers=4,
                num_attention_heads=4, decoder_hidden_size=64, decoder_num_layers=2, decoder_num_attention_heads=4,
                batch_size=16, warmup=3, iters=20, bf16=False),
    # ViT-B, 12 + 8 blocks, over SD-style 4x28x28 latents with patch 2 (196 tokens), as in method.md §6.
    "gpu": dict(latent_channels=4, latent_size=28, patch_size=2, hidden_size=768, num_layers=12,
                num_attention_heads=12, decoder_hidden_size=512, decoder_num_layers=8, decoder_num_attention_heads=16,
                batch_size=256, warmup=5, iters=20, bf16=True),
    # The demo's and the generation benchmark's ViT on Fashion-MNIST's 4x16x16 latents (64 tokens), batch 64: the
    # size at which to weigh a sampling head's cost (--head_type diffusion) against the MSE head's.
    "fmnist": dict(latent_channels=4, latent_size=16, patch_size=2, **DEMO_VIT, batch_size=64, warmup=3, iters=20,
                   bf16=False),
}  # fmt: skip
# LMDModel's head options a run may set (--head_type and the diffusion head's size); ViTMAE has no such head.
HEAD_FLAGS = (("head_type", str, "LMD's head (default: mse); not ViTMAE's."), *DIFFUSION_HEAD_OVERRIDES)
HEAD_OPTIONS = tuple(name for name, _, _ in HEAD_FLAGS)
MASK_RATIOS = (0.15, 0.45, 0.75)
# The preset keys that are LMDModel's parameters of the same name.
LMD_ARCHITECTURE = (
    "patch_size",
    "hidden_size",
    "num_layers",
    "num_attention_heads",
    "decoder_hidden_size",
    "decoder_num_layers",
    "decoder_num_attention_heads",
)
IMPLS = ("lmd", "vitmae")


def build_lmd(cfg: dict) -> torch.nn.Module:
    """The LMD model of a preset."""
    architecture = {name: cfg[name] for name in LMD_ARCHITECTURE}
    head = {name: cfg[name] for name in HEAD_OPTIONS if cfg.get(name) is not None}
    return LMDModel(sample_size=cfg["latent_size"], in_channels=cfg["latent_channels"], **architecture, **head)


def build_vitmae(cfg: dict, mask_ratio: float) -> torch.nn.Module:
    """transformers' ViTMAE with the same grid, widths, depths, heads and MLP ratio (4) as :func:`build_lmd`."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(
        image_size=cfg["latent_size"],
        patch_size=cfg["patch_size"],
        num_channels=cfg["latent_channels"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=4 * cfg["hidden_size"],
        decoder_hidden_size=cfg["decoder_hidden_size"],
        decoder_num_hidden_layers=cfg["decoder_num_layers"],
        decoder_num_attention_heads=cfg["decoder_num_attention_heads"],
        decoder_intermediate_size=4 * cfg["decoder_hidden_size"],
        mask_ratio=mask_ratio,
        attn_implementation="sdpa",
    )
    return ViTMAEForPreTraining(config)


def loss_fn(impl: str, model: torch.nn.Module, latents: torch.Tensor, mask_ratio: float) -> Callable[[], torch.Tensor]:
    """A closure computing the training loss of one batch for either implementation."""
    if impl == "lmd":
        return lambda: model(latents, mask_ratio=mask_ratio).loss
    return lambda: model(pixel_values=latents).loss


def make_train_step(
    model: torch.nn.Module, compute_loss: Callable[[], torch.Tensor], device: torch.device, bf16: bool
) -> Callable[[], None]:
    """Forward, backward and an AdamW update (MAE's betas and weight decay; fused on CUDA)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = compute_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count_step_flops(compute_loss: Callable[[], torch.Tensor], bf16: bool, device: torch.device) -> int:
    """FLOPs of one forward + backward, counted by ``FlopCounterMode`` (the optimiser update is negligible)."""

    def forward_backward() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = compute_loss()
        loss.backward()

    return step_flops(forward_backward)


@dataclass
class StepCase:
    """A ready-to-time training step of one implementation at one mask ratio."""

    impl: str
    compiled: bool
    mask_ratio: float
    batch_size: int
    step: Callable[[], None]
    flops: int


def build_case(impl: str, compiled: bool, mask_ratio: float, cfg: dict, device: torch.device) -> StepCase:
    """Build the model, its optimiser and a batch of latents, and count the FLOPs of one step."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}.")
    torch.manual_seed(0)
    model = (build_lmd(cfg) if impl == "lmd" else build_vitmae(cfg, mask_ratio)).to(device).train()
    size = cfg["latent_size"]
    latents = torch.randn(cfg["batch_size"], cfg["latent_channels"], size, size, device=device)
    flops = count_step_flops(loss_fn(impl, model, latents, mask_ratio), cfg["bf16"], device)
    model.zero_grad(set_to_none=True)
    runner = torch.compile(model, dynamic=False) if compiled else model
    step = make_train_step(model, loss_fn(impl, runner, latents, mask_ratio), device, cfg["bf16"])
    return StepCase(impl, compiled, mask_ratio, cfg["batch_size"], step, flops)


def _seconds(step: Callable[[], None], device: torch.device, clock: str) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    tick = CLOCKS[clock]
    t0 = tick()
    step()
    return tick() - t0


def time_steps(
    steps: list[Callable[[], None]], warmup: int, iters: int, device: torch.device, clock: str = "wall"
) -> list[list[float]]:
    """Seconds of each of ``iters`` calls of every step, after ``warmup`` untimed calls.

    CUDA steps are timed with CUDA events. On CPU, ``clock="wall"`` is elapsed time and ``clock="cpu"`` the
    process's CPU time, which a busy shared machine barely inflates (use it with one thread: spinning
    OpenMP workers would count). The steps are timed in turn, one call each per round, so a noisy
    neighbour slows every implementation alike instead of whichever happened to run at the time.
    """
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(iters):
        for step, record in zip(steps, times):
            record.append(_seconds(step, device, clock))
    return times


def case_row(case: StepCase, times: list[float]) -> dict:
    """A row of the results table: median throughput (and the best step's, a noise-free bound) and TFLOP/s."""
    seconds = statistics.median(times)
    return {
        "impl": case.impl,
        "compiled": case.compiled,
        "mask_ratio": case.mask_ratio,
        "img_per_s": case.batch_size / seconds,
        "tflops": case.flops / seconds / 1e12,
        "img_per_s_best": case.batch_size / min(times),
        "step_s": seconds,
        "flops_per_step": case.flops,
        "step_times_s": times,
    }


def paired_speedup(lmd_times: list[float], other_times: list[float]) -> float:
    """Median over rounds of ``other / lmd`` step time: LMD's speed-up, robust to load that drifts between rounds."""
    return statistics.median(o / t for t, o in zip(lmd_times, other_times))


def measure_step(impl: str, compiled: bool, mask_ratio: float, cfg: dict, device: torch.device) -> dict:
    """Train-step throughput of one implementation at one mask ratio, timed on its own."""
    case = build_case(impl, compiled, mask_ratio, cfg, device)
    (times,) = time_steps([case.step], cfg["warmup"], cfg["iters"], device, cfg.get("clock", "wall"))
    return case_row(case, times)


def run(
    cfg: dict,
    device: torch.device,
    impls: tuple[str, ...] = IMPLS,
    mask_ratios: tuple[float, ...] = MASK_RATIOS,
    compile_modes: tuple[bool, ...] = (False, True),
) -> list[dict]:
    """Every (implementation, compiled, mask ratio) row; the implementations of a setting are timed interleaved.

    The LMD row also gets ``speedup_vs_vitmae_paired`` (see :func:`paired_speedup`) when ViTMAE is measured.
    """
    rows = []
    for compiled in compile_modes:
        for mask_ratio in mask_ratios:
            if compiled:
                torch._dynamo.reset()  # each setting compiles its own static-shape graphs
            cases = [build_case(impl, compiled, mask_ratio, cfg, device) for impl in impls]
            times = time_steps([c.step for c in cases], cfg["warmup"], cfg["iters"], device, cfg.get("clock", "wall"))
            setting_rows = {case.impl: case_row(case, t) for case, t in zip(cases, times)}
            if "lmd" in setting_rows and "vitmae" in setting_rows:
                setting_rows["lmd"]["speedup_vs_vitmae_paired"] = paired_speedup(
                    setting_rows["lmd"]["step_times_s"], setting_rows["vitmae"]["step_times_s"]
                )
            for row in setting_rows.values():
                print(
                    f"  {row['impl']:7s} compiled={compiled!s:5s} mask={mask_ratio:.2f} {row['img_per_s']:10.1f} img/s",
                    flush=True,
                )
                rows.append(row)
            del cases
    return rows


def cost_projector(preset: str, latent_size: int) -> Projector:
    """A freshly initialised projector with the efficiency benchmark preset's architecture, sized so that its
    latents are ``latent_size`` wide: encoding costs the same whatever the weights, so timing needs no training."""
    flags, _ = add_projector_args(argparse.ArgumentParser()).parse_known_args(list(get_preset(preset).projector_args))
    flags.resolution = latent_size * 2 ** (len(flags.block_out_channels) - 1)
    torch.manual_seed(0)
    return build_projector(**projector_kwargs(flags))


def measure_cost_per_image(cfg: dict, device: torch.device, preset: str, mask_ratios: tuple[float, ...]) -> dict:
    """Per-image cost of an LMD step on cached latents vs with online encoding, and MFU against a measured matmul.

    The matmul ceiling (:func:`device_matmul_ceiling`) is timed on the same device and clock, in the step's
    precision: the practical peak a training step could reach.
    """
    vae = cost_projector(preset, cfg["latent_size"]).to(device).eval()
    if latent_channels(vae) != cfg["latent_channels"]:
        raise ValueError(f"The {preset} projector has {latent_channels(vae)} latent channels, the model expects "
                         f"{cfg['latent_channels']}.")  # fmt: skip
    resolution = cfg["latent_size"] * downsample_factor(vae)
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(cfg["batch_size"], 3, resolution, resolution, generator=generator) * 2 - 1).to(device)
    timer = CLOCKS[cfg.get("clock", "wall")]
    ceiling, dtype = device_matmul_ceiling(device, timer=timer)
    torch.manual_seed(0)
    model = build_lmd(cfg).to(device).train()
    mixed_precision = "bf16" if cfg["bf16"] else None
    rows = lmd_cost_per_image(model, vae, images, mask_ratios, mixed_precision, ceiling, cfg["iters"], timer)
    return {
        "matmul_ceiling_tflops": ceiling,
        "matmul_ceiling_dtype": str(dtype).removeprefix("torch."),
        "clock": cfg.get("clock", "wall"),
        "projector": f"{type(vae).__name__}, {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params, "
        f"f={downsample_factor(vae)}, {resolution}px images",
        "rows": rows,
    }


def profile_step(cfg: dict, device: torch.device, mask_ratio: float, out_dir: Path, steps: int = 5) -> str:
    """One ``torch.profiler`` trace of LMD's eager training step at ``mask_ratio``: where the step's time goes.

    Writes the operator table (sorted by device time, or CPU time without CUDA) and a Chrome trace to ``out_dir``
    and returns the table.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    case = build_case("lmd", False, mask_ratio, cfg, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, schedule=schedule(wait=1, warmup=2, active=steps)) as prof:
        for _ in range(3 + steps):
            case.step()
            prof.step()
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=30)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"profile_lmd_mask{mask_ratio:.2f}.txt").write_text(table + "\n")
    prof.export_chrome_trace(str(out_dir / f"trace_lmd_mask{mask_ratio:.2f}.json.gz"))
    return table


def format_table(rows: list[dict]) -> str:
    """Rows side by side: each mode and ratio with LMD, ViTMAE and LMD's speed-up (ratio of medians, and paired),
    and each one's MFU once the matmul ceiling is measured."""
    header = ["compiled", "mask ratio", "LMD img/s", "ViTMAE img/s", "LMD / ViTMAE", "paired", "LMD TFLOP/s",
              "ViTMAE TFLOP/s"]  # fmt: skip
    with_mfu = all("mfu" in r for r in rows)
    header += ["LMD MFU", "ViTMAE MFU"] if with_mfu else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keyed = {(r["impl"], r["compiled"], r["mask_ratio"]): r for r in rows}
    for compiled, ratio in sorted({(r["compiled"], r["mask_ratio"]) for r in rows}):
        lmd, mae = keyed.get(("lmd", compiled, ratio)), keyed.get(("vitmae", compiled, ratio))
        if lmd is None or mae is None:
            continue
        mfu = f" {lmd['mfu']:.1%} | {mae['mfu']:.1%} |" if with_mfu else ""
        lines.append(
            f"| {'yes' if compiled else 'no'} | {ratio:.2f} | {lmd['img_per_s']:.1f} | {mae['img_per_s']:.1f} | "
            f"{lmd['img_per_s'] / mae['img_per_s']:.2f}x | {lmd['speedup_vs_vitmae_paired']:.2f}x | "
            f"{lmd['tflops']:.3g} | {mae['tflops']:.3g} |{mfu}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--output", type=Path, default=None, help="Write the rows and settings to this JSON file.")
    parser.add_argument("--batch_size", type=int, default=None, help="Override the preset's batch size.")
    parser.add_argument("--iters", type=int, default=None, help="Override the preset's number of timed steps.")
    parser.add_argument("--mask_ratios", type=float, nargs="+", default=list(MASK_RATIOS))
    parser.add_argument("--impls", choices=IMPLS, nargs="+", default=list(IMPLS))
    parser.add_argument("--no_compile", action="store_true", help="Measure eager steps only.")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="CPU only: elapsed time (default) or process CPU time, steadier on a shared machine with --threads 1.",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU only: torch.set_num_threads.")
    for name, kind, text in HEAD_FLAGS:
        # the categorical head needs a VQModel's codebook, and this benchmark times random latents without one
        choices = tuple(h for h in HEAD_TYPES if h != "categorical") if name == "head_type" else None
        parser.add_argument(f"--{name}", type=kind, default=None, choices=choices, help=text)
    parser.add_argument(
        "--profile_dir",
        type=Path,
        default=None,
        help="Also write a torch.profiler operator table and Chrome trace of LMD's eager step at the last mask ratio.",
    )
    parser.add_argument(
        "--cost_per_image",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also measure the end-to-end cost per image with online projector encoding vs cached latents, and MFU.",
    )
    args = parser.parse_args()
    head = {name: getattr(args, name) for name in HEAD_OPTIONS if getattr(args, name) is not None}
    if head and "vitmae" in args.impls:
        parser.error("ViTMAE has no sampling head: with --head_type or the diffusion-head flags, pass --impls lmd.")
    if set(head) - {"head_type"} and head.get("head_type") != "diffusion":
        parser.error(
            "--diffusion_batch_mul / --diffusion_head_width / --diffusion_head_layers need --head_type diffusion."
        )

    cfg = {**PRESETS[args.preset], **head}
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg["clock"] = args.clock
    for key in ("batch_size", "iters"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    device = torch.device("cuda" if torch.cuda.is_available() and args.preset == "gpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif args.preset == "gpu":
        print("warning: no CUDA device; running the gpu preset on the CPU (slow, and not the recorded setting)")
    print(f"bench_step preset={args.preset} on {describe_hardware(device)}, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    compile_modes = (False,) if args.no_compile else (False, True)
    rows = run(cfg, device, tuple(args.impls), tuple(args.mask_ratios), compile_modes)
    result = {
        "rows": rows,
        "preset": args.preset,
        "hardware": describe_hardware(device),
        "torch": torch.__version__,
        "commit": git_commit(str(Path(__file__).parent)),
        "config": cfg,
        "wall_s": time.perf_counter() - start,
    }
    if args.cost_per_image:
        result["throughput"] = measure_cost_per_image(cfg, device, args.preset, tuple(args.mask_ratios))
        for row in rows:
            row["mfu"] = row["tflops"] / result["throughput"]["matmul_ceiling_tflops"]
        result["wall_s"] = time.perf_counter() - start
    if args.profile_dir is not None:
        print(profile_step(cfg, device, args.mask_ratios[-1], args.profile_dir), flush=True)
    print(format_table(rows))
    if args.cost_per_image:
        print(throughput_table(result))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
