"""benchmarks/bench_step.py measures both implementations on the same shape and reports well-formed rows."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_step.py"
TINY = dict(latent_channels=4, latent_size=8, patch_size=2, hidden_size=16, num_layers=1, num_attention_heads=2,
            decoder_hidden_size=8, decoder_num_layers=1, decoder_num_attention_heads=2, batch_size=2, warmup=1,
            iters=2, bf16=False)  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_step"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_step", None)


def test_both_implementations_have_the_same_shape_and_parameter_count(bench):
    lmd, mae = bench.build_lmd(TINY), bench.build_vitmae(TINY, 0.5)
    assert lmd.num_tokens(8, 8) == mae.config.image_size**2 // mae.config.patch_size**2 == 16
    # same widths, depths, MLP ratio, CLS and mask tokens: the trainable parameters agree exactly
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(lmd) == count(mae)


def test_run_returns_one_well_formed_row_per_setting(bench):
    device = torch.device("cpu")
    rows = bench.run(TINY, device, mask_ratios=(0.25, 0.75), compile_modes=(False,))
    assert [(r["impl"], r["mask_ratio"]) for r in rows] == [
        ("lmd", 0.25),
        ("vitmae", 0.25),
        ("lmd", 0.75),
        ("vitmae", 0.75),
    ]
    for row in rows:
        assert row["compiled"] is False
        assert row["img_per_s"] > 0 and row["tflops"] > 0 and row["flops_per_step"] > 0
    # masking more tokens leaves less encoder work: fewer FLOPs per step, for both implementations
    flops = {(r["impl"], r["mask_ratio"]): r["flops_per_step"] for r in rows}
    assert flops[("lmd", 0.75)] < flops[("lmd", 0.25)] and flops[("vitmae", 0.75)] < flops[("vitmae", 0.25)]
    table = bench.format_table(rows)
    assert table.count("\n") == 3 and "| no | 0.25 |" in table


def test_measure_step_times_a_single_case(bench):
    row = bench.measure_step("lmd", False, 0.5, TINY, torch.device("cpu"))
    assert row["impl"] == "lmd" and row["img_per_s"] > 0
    with pytest.raises(ValueError, match="impl must be one of"):
        bench.measure_step("unet", False, 0.5, TINY, torch.device("cpu"))


def test_cost_per_image_compares_online_encoding_with_cached_latents(bench):
    cfg = {**TINY, "iters": 1}
    vae = bench.cost_projector("cpu", cfg["latent_size"])
    assert vae.encode(torch.zeros(1, 3, 32, 32)).latents.shape == (1, 4, 8, 8)  # the model's latent grid

    cost = bench.measure_cost_per_image(cfg, torch.device("cpu"), "cpu", (0.25, 0.75))
    assert [row["mask_ratio"] for row in cost["rows"]] == [0.25, 0.75]
    assert cost["matmul_ceiling_tflops"] > 0 and "f=4, 32px" in cost["projector"]
    for row in cost["rows"]:
        # online = encoding + the cached step, per image
        assert row["online_ms"] == pytest.approx(row["cached_ms"] + row["encode_ms"])
        assert row["encode_ms"] > 0 and row["encode_over_step"] > 0 and row["mfu"] > 0
    assert "| 0.75 |" in bench.throughput_table({"throughput": cost})

    with pytest.raises(ValueError, match="latent channels"):
        bench.measure_cost_per_image({**cfg, "latent_channels": 3}, torch.device("cpu"), "cpu", (0.5,))


def test_the_head_options_build_the_head_asked_for_and_lmd_alone_measures_it(bench, monkeypatch, capsys):
    diffusion = bench.build_lmd({**TINY, "head_type": "diffusion", "diffusion_batch_mul": 1, "diffusion_head_width": 8})
    assert diffusion.config.head_type == "diffusion" and diffusion.diffusion_head is not None
    assert diffusion.config.diffusion_batch_mul == 1 and diffusion.config.diffusion_head_width == 8
    assert bench.build_lmd(TINY).diffusion_head is None  # the MSE head by default
    rows = bench.run({**TINY, "head_type": "diffusion"}, torch.device("cpu"), ("lmd",), (0.85,), (False,))
    assert [r["impl"] for r in rows] == ["lmd"] and rows[0]["img_per_s"] > 0
    for argv in (["--head_type", "diffusion"], ["--impls", "lmd", "--diffusion_batch_mul", "1"]):
        monkeypatch.setattr(sys, "argv", ["bench_step.py", "--preset", "cpu", *argv])
        with pytest.raises(SystemExit):  # ViTMAE has no such head; the head's sizes need the diffusion head
            bench.main()
    assert "--impls lmd" in capsys.readouterr().err
