"""Tables and plots of an efficiency result: the paper's Tables 1, 3 and 5 beside ours, PSNR vs time, losses.

Absolute MIT / MLT differ from the paper's by hardware, batch and data, so every table also gives each
method's MLT relative to the table's reference row, the figure the paper's claim is about.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from diffusers_lmd.metrics import ema_smooth
from diffusers_lmd.schedulers import LMDMaskScheduler

from .efficiency_methods import mask_ratio_at
from .efficiency_results import best_psnr

# method.md §5: (MIT, MLT, MLI) and, for Table 5, (overall, MAT@1, MAT@5).
PAPER_TABLE_1 = {"mae-pixel": (2.62, 17.11, 6.53), "lmd-ps": (2.78, 8.37, 3.01), "lmd-cs": (2.61, 6.92, 2.65)}
PAPER_TABLE_3 = {"ddpm-pixel": (5.45, 39.89, 7.32), "ldm-latent": (2.86, 15.84, 5.54), "lmd-cs": (2.45, 7.06, 2.88)}
PAPER_TABLE_5 = {
    "lmd-cs": ("LMD (full)", 2.48, 2.61, 6.92, 2.65, 0.135, 0.102),
    "lmd-pixel": ("w/o LSP", 2.81, 3.18, 7.92, 2.49, 0.285, 0.198),
    "lmd-unet": ("w/o MAE (U-Net)", 5.18, 2.95, 16.52, 5.60, 0.425, 0.385),
    "lmd-constant": ("w/o MDS (fixed 0.75)", 3.75, 2.62, 11.40, 4.35, 0.225, 0.143),
}
SCHEDULE_LABELS = {"lmd-cs": "cosine", "lmd-ps": "piecewise", "lmd-uniform": "uniform", "lmd-constant": "constant"}


def cell(value, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or a dash when it is missing or not finite (a table cell)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def markdown_table(header: str, rows: Iterable[str]) -> str:
    """A markdown table of ``header`` (the column names joined by `` | ``) and ``rows`` (each row's cells, likewise)."""
    separator = "|" + "---|" * len(header.split(" | "))
    return "\n".join([f"| {header} |", separator, *(f"| {row} |" for row in rows)])


def rows_by_method(result: dict) -> dict[str, dict]:
    """One row per method for the paper's tables: the first seed's."""
    rows: dict[str, dict] = {}
    for row in result["rows"]:
        rows.setdefault(row["method"], row)
    return rows


def _label(row: dict, result: dict) -> str:
    """``method`` or, when the run has several seeds, ``method s<seed>``."""
    return f"{row['method']} s{row.get('seed', 0)}" if (result.get("seeds") or 1) > 1 else row["method"]


def _ratio(row: dict | None, reference: dict | None, key: str) -> str:
    if not row or not reference or not row.get(key) or not reference.get(key):
        return "—"
    return f"{row[key] / reference[key]:.2f}×"


def results_table(result: dict) -> str:
    """Every row: steps, MIT, MLI, MLT, final and best PSNR, time and steps to the target PSNR, peak memory."""
    header = (
        "method | lr | steps | MIT (s) | MLI | MLT (s) | final PSNR (dB) | best PSNR (dB) | time to target (s) | "
        "steps to target | masked-latent MSE | final PSNR on training images (dB) | peak mem (MB)"
    )
    rows = []
    for row in result["rows"]:
        rate = f"{row['learning_rate']:g}" if row.get("learning_rate") else "—"
        steps_to_target = row.get("steps_to_target")
        rows.append(
            f"{_label(row, result)} | {rate} | {row['steps']} | {cell(row['mit_s'], 3)} | {cell(row['mli'])} | "
            f"{cell(row['mlt_s'], 2)} | {cell(row['final_psnr'])} | {cell(best_psnr(row))} | "
            f"{cell(row.get('time_to_target_s'), 1)} | {steps_to_target if steps_to_target is not None else '—'} | "
            f"{cell(row.get('eval_latent_mse'), 3)} | {cell(row.get('final_train_psnr'))} | "
            f"{cell(row['peak_mem_mb'], 0)}"
        )
    return markdown_table(header, rows)


def setting_lines(result: dict) -> str:
    """The projector's own training cost (counted in no method's budget) and the reference PSNRs of the run."""
    projector = result.get("projector") or {}
    if "train_seconds" in projector:
        origin = "trained here" if projector.get("trained_here") else "trained beforehand"
        lines = [
            f"- projector: {projector['projector_class']} {origin} by `training/train_projector.py`, "
            f"{projector['global_step']} steps, {projector['train_seconds']:.1f} s of training, held-out PSNR "
            f"{cell(projector.get('eval_psnr'))} dB (not in any method's budget)"
        ]
    else:
        lines = [f"- projector: {projector.get('path', 'given')}, training cost unknown (no projector_metrics.json)"]
    names = {
        "projector": "every latent as encoded (latent ceiling)",
        "mean_latent": "masked latents = the image's visible mean latent (latent floor)",
        "mean_pixel": "masked pixels = the image's visible mean colour (pixel floor)",
    }
    for field, where in (("reference_psnr", "held-out"), ("train_reference_psnr", "training images")):
        references = result.get(field) or {}
        for key, label in names.items():
            if key in references:
                lines.append(f"- reference PSNR on the {where}, {label}: {references[key]:.2f} dB")
    return "\n".join(lines)


def _paper_table(result: dict, paper: dict, reference: str, title: str) -> str:
    rows = rows_by_method(result)
    ref = rows.get(reference)
    paper_ref = paper[reference][1]
    cells = []
    for method, (mit, mlt, mli) in paper.items():
        row = rows.get(method, {})
        cells.append(
            f"{method} | {mit:.2f} | {mlt:.2f} | {mli:.2f} | {mlt / paper_ref:.2f}× | {cell(row.get('mit_s'), 3)} "
            f"| {cell(row.get('mlt_s'))} | {cell(row.get('mli'))} | {_ratio(row, ref, 'mlt_s')}"
        )
    header = (
        "method | paper MIT | paper MLT | paper MLI | paper MLT / ref | our MIT (s) | our MLT (s) | our MLI | "
        "our MLT / ref"
    )
    title = f"**{title}** (paper: seconds on V100/3090 at ImageNet/LSUN scale; ours: this run)"
    return f"{title}\n\n{markdown_table(header, cells)}"


def table_1(result: dict) -> str:
    """Paper Table 1 (LMD vs MAE, reference MAE)."""
    return _paper_table(result, PAPER_TABLE_1, "mae-pixel", "Table 1: LMD vs MAE")


def table_3(result: dict) -> str:
    """Paper Table 3 (LMD vs DDPM and LDM, reference DDPM)."""
    return _paper_table(result, PAPER_TABLE_3, "ddpm-pixel", "Table 3: LMD vs diffusion U-Nets")


def table_5(result: dict) -> str:
    """Paper Table 5 (ablations). MAT@k comes from fine-tuning, which this benchmark does not run."""
    rows = rows_by_method(result)
    cells = []
    for method, (label, overall, mit, mlt, mli, mat1, mat5) in PAPER_TABLE_5.items():
        row = rows.get(method, {})
        cells.append(
            f"{label} | {method} | {overall:.2f} | {mit:.2f} | {mlt:.2f} | {mli:.2f} | {mat1:.3f} | {mat5:.3f} | "
            f"{cell(row.get('mit_s'), 3)} | {cell(row.get('mlt_s'))} | {cell(row.get('mli'))} | "
            f"{cell(row.get('final_psnr'))} | {cell(row.get('time_to_target_s'), 1)}"
        )
    header = (
        "setting | method | paper overall | paper MIT | paper MLT | paper MLI | paper MAT@1 | paper MAT@5 | "
        "our MIT (s) | our MLT (s) | our MLI | our final PSNR | our time to target (s)"
    )
    title = (
        "**Table 5: ablations** (MAT@1/@5 and the overall mean need fine-tuning, reported in the fine-tuning "
        "section; ours adds time to the target PSNR)"
    )
    return f"{title}\n\n{markdown_table(header, cells)}"


def load_pyplot():
    """matplotlib's ``pyplot`` on the file-only Agg backend (imported here: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_psnr_vs_time(result: dict, path: str) -> str:
    """Held-out PSNR against training seconds for every method with a PSNR, with the target line."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    colors: dict[str, str] = {}
    for row in result["rows"]:
        if row.get("curve"):
            seconds, _, values = zip(*row["curve"])
            style = "-" if row["method"].startswith("lmd") else "--"
            first = row["method"] not in colors
            color = colors.setdefault(row["method"], f"C{len(colors) % 10}")
            label = row["method"] if first else None  # one legend entry per method, every seed drawn
            ax.plot(seconds, values, style, marker=".", linewidth=1.2, color=color, label=label, alpha=0.85)
    if result.get("target_psnr") is not None:
        ax.axhline(result["target_psnr"], color="black", linewidth=0.8, linestyle=":", label="target PSNR")
    references = result.get("reference_psnr") or {}
    labels = {
        "projector": "projector alone (latent ceiling)",
        "mean_latent": "visible mean-latent fill (latent floor)",
        "mean_pixel": "mean-colour fill (pixel floor)",
    }
    highest = max((point[2] for row in result["rows"] for point in row.get("curve", [])), default=None)
    for key, color in (("projector", "tab:gray"), ("mean_latent", "tab:brown"), ("mean_pixel", "tab:olive")):
        if key not in references:
            continue
        if key == "projector" and highest is not None and references[key] > highest + 5:
            # Far above every curve: named in the legend rather than drawn, so the curves keep the scale.
            ax.plot([], [], color=color, linestyle="-.", label=f"{labels[key]}: {references[key]:.1f} dB, off scale")
        else:
            ax.axhline(references[key], color=color, linewidth=0.8, linestyle="-.", label=labels[key])
    ax.set_xlabel("training CPU time (s)" if result.get("clock") == "cpu" else "training wall-clock (s)")
    ax.set_ylabel("held-out PSNR, mask 0.75 (dB)")
    ax.set_title(f"Time to quality ({result['hardware']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_loss_curves(result: dict, path: str, methods=("lmd-ps", "lmd-cs", "lmd-constant", "mae-pixel")) -> str:
    """The paper's Fig. 8: raw and EMA-smoothed training loss per step, with the mask ratio on a second axis."""
    plt = load_pyplot()
    rows = rows_by_method(result)
    shown = [m for m in methods if m in rows and rows[m].get("losses")]
    if not shown:
        raise ValueError(f"No loss curves for {list(methods)} in this result.")
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.2), dpi=110, squeeze=False)
    for ax, method in zip(axes[0], shown):
        steps, _, losses, ratios = zip(*rows[method]["losses"])
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.7)
        ax.plot(steps, ema_smooth(losses), color="tab:blue", linewidth=1.4)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        twin = ax.twinx()
        twin.plot(steps, ratios, color="tab:green", linewidth=1.0)
        twin.set_ylim(0, 1)
        twin.set_ylabel("mask ratio", color="tab:green")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mask_schedules(path: str, points: int = 600) -> str:
    """The four mask-ratio schedules over a run, as LMD trains them (method.md §3)."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    progress = [i / (points - 1) for i in range(points)]
    for method, schedule in SCHEDULE_LABELS.items():
        scheduler = LMDMaskScheduler(schedule)
        ax.plot(progress, [mask_ratio_at(scheduler, p) for p in progress], label=f"{schedule} ({method})")
    ax.set_xlabel("share of the training run")
    ax.set_ylabel("mask ratio")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def throughput_table(result: dict) -> str:
    """Per-image cost of an LMD step on cached latents vs with online encoding, and MFU vs the matmul ceiling."""
    throughput = result.get("throughput")
    if not throughput:
        return ""
    title = (
        f"**Cost per training image** (LMD step, batch {throughput['rows'][0]['batch']}; matmul ceiling "
        f"{throughput['matmul_ceiling_tflops']:.3g} TFLOP/s measured on this device"
        f"{', times in CPU seconds' if throughput.get('clock') == 'cpu' else ''})"
    )
    header = (
        "mask ratio | cached latents (ms/img) | encode (ms/img) | online encoding (ms/img) | encode / step | "
        "step TFLOP/s | MFU vs matmul"
    )
    cells = (
        f"{row['mask_ratio']:.2f} | {row['cached_ms']:.3f} | {row['encode_ms']:.3f} | {row['online_ms']:.3f} | "
        f"{row['encode_over_step']:.2f}× | {row['step_tflops']:.3g} | {row['mfu']:.1%}"
        for row in throughput["rows"]
    )
    return f"{title}\n\n{markdown_table(header, cells)}"
