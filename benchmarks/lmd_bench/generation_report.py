"""Tables, the FID-vs-time plot and the sample grids of a generation result (paper Tables 3 and 4, measured).

Every FID here is :data:`~diffusers_lmd.metrics.FID_NAME`: the paper's FIDs (Inception, ImageNet / LSUN / CC)
are printed beside ours for the layout only; the comparison that means something is between our rows.
"""

from __future__ import annotations

import math

import torch

from diffusers_lmd.metrics import FID_NAME

from .efficiency_report import PAPER_TABLE_3, cell, load_pyplot, markdown_table, rows_by_method

# Paper Table 3's LMD row is its LSUN model; each of our LMD rows sits beside it.
TABLE_3_ROWS = (("ddpm-pixel", "ddpm-pixel"), ("ldm-latent", "ldm-latent"), ("lmd-cs", "lmd-mse"),
                ("lmd-cs", "lmd-diffusion"), ("lmd-cs", "lmd-categorical"))  # fmt: skip
# Paper Table 4 (text-conditioned, Conceptual Captions, Inception FID): LMD 6.2 against Muse 6.8.
PAPER_TABLE_4_FID = {"Muse": 6.8, "LMD": 6.2}


def fid_target(rows: list[dict]) -> float | None:
    """The lowest FID that *every* row reaches on its curve (the highest of their best curve FIDs)."""
    bests = [min(point[2] for point in row["curve"]) for row in rows if row.get("curve")]
    return max(bests) if bests else None


def add_time_to_fid(rows: list[dict], target: float | None) -> None:
    """Set ``time_to_fid_target_s`` / ``steps_to_fid_target``: the first curve point at or below ``target``."""
    for row in rows:
        hit = next((p for p in row.get("curve", []) if target is not None and p[2] <= target), None)
        row["time_to_fid_target_s"], row["steps_to_fid_target"] = (hit[0], hit[1]) if hit else (None, None)


def generation_table(result: dict) -> str:
    """Every row: steps, MIT / MLI / MLT, FID, conditional accuracy, precision / recall, coverage, samples/s,
    sampler."""
    n = result["config"]["final_samples"]
    header = (
        f"method | steps | MIT (s) | MLI | MLT (s) | FID ({n}) | conditional accuracy | precision | recall | "
        "coverage | samples/s | time to FID target (s) | sampler"
    )
    cells = (
        f"{row['method']} | {row['steps']} | {cell(row['mit_s'], 3)} | {cell(row['mli'])} | "
        f"{cell(row['mlt_s'])} | {cell(row['fid'])} | {cell(row['conditional_accuracy'], 3)} | "
        f"{cell(row['precision'], 3)} | {cell(row['recall'], 3)} | {cell(row.get('coverage'), 3)} | "
        f"{cell(row['samples_per_s'], 1)} | {cell(row.get('time_to_fid_target_s'), 1)} | {row['sampler']['sampler']}"
        for row in result["rows"]
    )
    return markdown_table(header, cells)


def floor_lines(result: dict) -> str:
    """The metric's floor (training images against the test split) and the classifier it is measured with."""
    floor = result["fid_floor"]
    classifier = result.get("classifier") or {}
    lines = [f"- metric: {FID_NAME}; classifier test accuracy {cell(classifier.get('test_accuracy'), 4)}"]
    for key, scores in floor.items():
        what = "all training images" if key == "all_train" else f"{key} class-balanced training images"
        extra = ""
        if "conditional_accuracy" in scores:
            extra = (f", conditional accuracy {scores['conditional_accuracy']:.3f}, precision "
                     f"{scores['precision']:.3f}, recall {scores['recall']:.3f}")  # fmt: skip
        lines.append(f"- floor, {what} against the test split: FID {scores['fid']:.3f}{extra}")
    checks = result.get("metric_checks")
    if checks:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in checks.items() if k != "num_samples")
        lines.append(f"- the metric on {checks['num_samples']} degraded training images: {parts}")
    return "\n".join(lines)


def table_3(result: dict) -> str:
    """Paper Table 3 (LMD vs DDPM and LDM: MIT / MLT / MLI, reference DDPM) with our FID beside it."""
    rows = rows_by_method(result)
    ref = rows.get("ddpm-pixel") or {}
    paper_ref = PAPER_TABLE_3["ddpm-pixel"][1]
    cells = []
    for paper_key, ours in TABLE_3_ROWS:
        mit, mlt, mli = PAPER_TABLE_3[paper_key]
        label = {"lmd-cs": "LMD"}.get(paper_key, paper_key)
        row = rows.get(ours, {})
        ratio = row["mlt_s"] / ref["mlt_s"] if row.get("mlt_s") and ref.get("mlt_s") else None
        cells.append(
            f"{label} | {mit:.2f} | {mlt:.2f} | {mli:.2f} | {mlt / paper_ref:.2f}× | {ours} | "
            f"{cell(row.get('mit_s'), 3)} | {cell(row.get('mlt_s'))} | {cell(row.get('mli'))} | "
            f"{cell(ratio)}{'×' if ratio else ''} | {cell(row.get('fid'))} | {cell(row.get('time_to_fid_target_s'), 1)}"
        )
    title = "**Table 3: LMD vs diffusion U-Nets** (paper: LSUN-Bedrooms on V100/3090; ours: this run, Fashion-MNIST)"
    header = (
        "paper row | paper MIT | paper MLT | paper MLI | paper MLT / DDPM | our method | our MIT (s) | our MLT (s) | "
        "our MLI | our MLT / DDPM | our FID | our time to FID target (s)"
    )
    return f"{title}\n\n{markdown_table(header, cells)}"


def table_4(result: dict) -> str:
    """Paper Table 4's layout (FID and the conditioning score; ours: conditional accuracy in place of CLIP)."""
    title = (
        f"**Table 4: generation quality** (paper: text-conditioned, Conceptual Captions, Inception FID — LMD "
        f"{PAPER_TABLE_4_FID['LMD']} vs Muse {PAPER_TABLE_4_FID['Muse']}; ours: class-conditional Fashion-MNIST, "
        "FID on a Fashion-MNIST classifier's features, not comparable to Inception FID)"
    )
    header = "method | FID | conditional accuracy (for CLIP score) | precision | recall | samples/s | train (s)"
    cells = (
        f"{row['method']} | {cell(row['fid'])} | {cell(row['conditional_accuracy'], 3)} | "
        f"{cell(row['precision'], 3)} | {cell(row['recall'], 3)} | {cell(row['samples_per_s'], 1)} | "
        f"{cell(row['train_s'], 0)}"
        for row in result["rows"]
    )
    return f"{title}\n\n{markdown_table(header, cells)}"


def plot_fid_vs_time(result: dict, path: str) -> str:
    """FID (at ``eval_samples`` per point) against training seconds for every method, with the metric's floor."""
    plt = load_pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for row in result["rows"]:
        if row.get("curve"):
            seconds, _, fids = zip(*[(p[0], p[1], p[2]) for p in row["curve"]])
            style = "-" if row["method"].startswith("lmd") else "--"
            ax.plot(seconds, fids, style, marker="o", linewidth=1.4, label=row["method"])
    n = str(result["config"]["eval_samples"])
    if n in result.get("fid_floor", {}):
        ax.axhline(result["fid_floor"][n]["fid"], color="black", linewidth=0.8, linestyle=":",
                   label=f"floor: {n} training images")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("training CPU time (s)" if result.get("clock") == "cpu" else "training wall-clock (s)")
    ax.set_ylabel(f"FID, {n} samples (classifier features)")
    ax.set_title(f"FID on a Fashion-MNIST classifier's features vs training time ({result['hardware']})", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_sample_grid(
    images: torch.Tensor, labels: torch.Tensor, label_names: list[str], path: str, per_class: int = 10
) -> str:
    """A PNG with one row per class (``per_class`` samples each, the first ones of that class), names on the left."""
    plt = load_pyplot()
    classes = len(label_names)
    per_class = max(1, min(per_class, max(int((labels == c).sum()) for c in range(classes))))
    fig, axes = plt.subplots(classes, per_class, figsize=(per_class * 0.6 + 1.2, classes * 0.6), dpi=110,
                             squeeze=False)  # fmt: skip
    for c in range(classes):
        picked = torch.nonzero(labels == c).flatten()[:per_class]
        for j in range(per_class):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(picked):
                image = images[picked[j]].float().clamp(-1, 1).add(1).div(2).permute(1, 2, 0).numpy()
                ax.imshow(image, interpolation="nearest")
        axes[c][0].set_ylabel(label_names[c], rotation=0, ha="right", va="center", fontsize=6)
    fig.subplots_adjust(left=0.16, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    fig.savefig(path)
    plt.close(fig)
    return path


def headline(result: dict) -> str:
    """One line per method: time to the common FID target, and FID / accuracy at the end."""
    target = result.get("fid_target")
    lines = [f"FID target (the lowest FID every method reaches): {cell(target)}"]
    for row in result["rows"]:
        reached = row.get("time_to_fid_target_s")
        when = (
            f"reaches it at {reached:.0f} s" if reached is not None and math.isfinite(reached) else "never reaches it"
        )
        lines.append(
            f"- {row['method']}: {when}; final FID {row['fid']:.2f}, conditional accuracy "
            f"{row['conditional_accuracy']:.3f}, {row['samples_per_s']:.1f} samples/s"
        )
    return "\n".join(lines)
