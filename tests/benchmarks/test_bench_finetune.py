"""The fine-tuning comparison (paper Table 2): its headline rows, its presets' pre-training, the MAE baseline."""

import pytest
import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from diffusers_lmd import LMDForImageClassification
from diffusers_lmd.training import load_projector
from lmd_bench.efficiency_presets import get_preset as efficiency_preset
from lmd_bench.efficiency_registry import build_method
from lmd_bench.finetune_bench import classifiers, comparison_rows
from lmd_bench.finetune_presets import get_preset
from lmd_bench.vit_baseline import vit_classifier_from_mae, vit_layer_id


def test_benchmark_rows_share_the_target_both_runs_reach():
    def curve(top1s):
        return [{"step": 10 * i, "time": 2.0 * i, "top1": a, "top5": min(1.0, a + 0.3)} for i, a in enumerate(top1s)]

    curves = {"lmd-cs": curve([0.1, 0.5, 0.7, 0.8]), "mae": curve([0.1, 0.2, 0.2, 0.6])}
    pretrain = {name: {"steps": 100, "mit_s": 0.1, "final_psnr": 12.0} for name in curves}
    curves["lmd-scratch"] = curve([0.1, 0.2, 0.3, 0.4])  # the control without pre-training
    curves["mae"] = curves["mae"][:3] + [{**curves["mae"][3], "step": 25}]  # stopped by the clock after step 25
    rows, target, common_step = comparison_rows(curves, pretrain, eval_steps=10)
    assert target == 0.6  # the best top-1 that both pre-trained runs reach
    assert common_step == 20  # the last evaluation step every run reached
    by_name = {row["method"]: row for row in rows}
    assert by_name["lmd-cs"]["time_to_target_s"] == 4.0 and by_name["mae"]["time_to_target_s"] == 6.0
    assert by_name["lmd-scratch"]["time_to_target_s"] is None and by_name["lmd-scratch"]["pretrain_steps"] == 0
    assert [by_name[n]["top1_at_common_step"] for n in ("lmd-cs", "mae", "lmd-scratch")] == [0.7, 0.2, 0.3]
    assert by_name["lmd-cs"]["mat_at_1"] == pytest.approx(2.0) and by_name["mae"]["mat_at_1"] == pytest.approx(3.0)
    flat = comparison_rows({"lmd-cs": curve([0.3, 0.3]), "mae": curve([0.3, 0.2])}, pretrain, eval_steps=10)[0]
    assert flat[0]["mat_at_1"] is None  # never improved: no MAT, and the JSON stays standard


def test_fmnist_preset_pretrains_as_the_efficiency_benchmark_and_fine_tunes_every_encoder(tiny_projector_path):
    preset = get_preset("fmnist-cpu")
    pretraining = preset.efficiency_preset()
    base = efficiency_preset("fmnist-cpu")
    assert pretraining.lmd_overrides == base.lmd_overrides and pretraining.learning_rates == base.learning_rates
    assert pretraining.budget_s == preset.pretrain_s and preset.data_flags[:2] == ("--dataset_name", "fashion_mnist")
    assert set(preset.pretrain_methods) == {"lmd-cs", "mae", "mae-ours"}
    vae = load_projector(tiny_projector_path)
    tiny = pretraining.with_overrides(resolution=16, lmd_preset="tiny", lmd_overrides={})
    trained = {row: (build_method(name, tiny, vae), {}) for row, name in preset.pretrain_methods.items()}
    models = classifiers(trained, num_labels=10)
    assert set(models) == {"lmd-cs", "mae", "mae-ours", "lmd-scratch"}
    assert isinstance(models["mae-ours"], LMDForImageClassification) and models["mae-ours"].config.in_channels == 3
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    assert models["mae-ours"](latents=pixels).logits.shape == (2, 10)  # the pixel encoder takes pixels as latents
    assert type(models["mae"]).__name__ == "ViTForImageClassification"


def test_vit_baseline_takes_the_mae_encoder_and_layer_ids():
    config = ViTMAEConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    config.update(dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2))
    mae = ViTMAEForPreTraining(config)
    vit = vit_classifier_from_mae(mae, num_labels=7)
    for name, value in mae.vit.state_dict().items():
        assert torch.equal(vit.vit.state_dict()[name], value), name
    out = vit(
        pixel_values=torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        labels=torch.tensor([1, 6]),
    )
    assert out.logits.shape == (2, 7) and out.loss.ndim == 0
    layer_id = vit_layer_id(2)
    assert layer_id("vit.embeddings.cls_token") == 0
    assert layer_id("vit.encoder.layer.1.attention.attention.query.weight") == 2
    assert layer_id("classifier.weight") == layer_id("vit.layernorm.bias") == 3
