"""The generation benchmark at tiny sizes: every method trains, samples and is scored; each peer learns; guidance
and the preset checks behave; the report, plot and grids are written. Synthetic 16-px data, random tiny models."""

import importlib.util
import json
import os

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel, UVit2DModel, VQModel
from safetensors.torch import load_file

from diffusers_lmd.data import LabelledTensors
from diffusers_lmd.metrics import FeatureClassifier, GenerationScorer
from diffusers_lmd.pipelines import LMDPipeline
from diffusers_lmd.projector import encode_images, vq_codebook
from lmd_bench.budget import RunSettings
from lmd_bench.data import BenchmarkData
from lmd_bench.generation_amused import AmusedTokensMethod
from lmd_bench.generation_bench import (
    GENERATION_METHODS,
    build_generation_method,
    check_generation_methods,
    load_generation_method,
    run_generation_benchmark,
)
from lmd_bench.generation_loop import GenerationData, sample_classes, train_generator_for_budget
from lmd_bench.generation_methods import ConditionalDiffusionMethod, balanced_labels, drop_labels, read_class_labels
from lmd_bench.generation_presets import GenerationPreset, get_generation_preset
from lmd_bench.generation_report import (
    TABLE_3_ROWS,
    generation_table,
    plot_fid_vs_time,
    save_sample_grid,
    table_3,
    table_4,
)
from lmd_bench.presets import unet_config
from tests.conftest import TINY_PROJECTOR

NUM_CLASSES = 4
# amused-tokens at test size: 8x8 codes of the tiny projector, downsampled to 4x4 for one width-16 layer.
TINY_AMUSED = dict(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, encoder_hidden_size=16,
    cond_embed_dim=16, micro_cond_encode_dim=4, micro_cond_embed_dim=20, in_channels=8, block_out_channels=16,
    num_res_blocks=1, block_num_heads=2, downsample=True, upsample=True,
)  # fmt: skip


def tiny_preset(**changes) -> GenerationPreset:
    preset = GenerationPreset(
        name="tiny",
        budget_s=0.3,
        train_batch_size=8,
        learning_rate=1e-3,
        num_evals=2,
        eval_samples=8,
        final_samples=16,
        lmd_preset="tiny",
        unet_pixel=unet_config((8, 16), (False, True), 1),
        unet_latent=unet_config((8, 16), (False, True), 1),
        ddim_steps=3,
        lmd_steps=2,
        lmd_head_steps=3,
        amused_config=TINY_AMUSED,
        amused_steps=3,
        lr_warmup_steps=0,
        mit_warmup_steps=1,
        sample_batch_size=8,
        ema_decay=0.99,
        guidance_scale=1.5,  # exercise classifier-free guidance in every sampler
        label_dropout=0.2,
        num_classes=NUM_CLASSES,
    )
    return preset.with_overrides(**changes)


@pytest.fixture(scope="module")
def setting():
    """A tiny projector, a tiny random classifier and 64 labelled 16-px images whose class sets their brightness."""
    torch.manual_seed(0)
    vae = VQModel(**TINY_PROJECTOR, num_vq_embeddings=16, vq_embed_dim=4).eval()
    labels = torch.arange(64) % NUM_CLASSES
    images = (torch.rand(64, 3, 16, 16) * 0.5 + labels[:, None, None, None] * 0.3 - 0.9).clamp(-1, 1)
    data = BenchmarkData(
        train_images=images,
        eval_images=images[:32],
        train_latents=encode_images(vae, images),
        train_latents_flipped=encode_images(vae, images.flip(-1)),
    )
    names = [f"class {c}" for c in range(NUM_CLASSES)]
    generation_data = GenerationData(data, labels, LabelledTensors(images[:32], labels[:32]), names)
    classifier = FeatureClassifier(sample_size=16, num_classes=NUM_CLASSES, block_channels=(4, 8), feature_dim=8)
    return vae, generation_data, classifier.eval()


def test_the_benchmark_runs_every_method_and_reports(setting, tmp_path, one_thread):
    vae, data, classifier = setting
    preset = tiny_preset()
    models = tmp_path / "models"
    result, samples = run_generation_benchmark(
        preset, list(GENERATION_METHODS), vae, data, classifier, log=lambda m: 0, save_dir=str(models)
    )
    json.dumps(result)  # the whole result is JSON
    assert sorted(os.listdir(models)) == sorted(GENERATION_METHODS)
    assert all(read_class_labels(str(models / name))["method"] == name for name in GENERATION_METHODS)
    assert [row["method"] for row in result["rows"]] == list(GENERATION_METHODS)
    assert set(result["fid_floor"]) == {"8", "16", "all_train"}
    for row in result["rows"]:
        assert row["fid"] >= 0 and 0 <= row["conditional_accuracy"] <= 1 and row["samples_per_s"] > 0
        assert row["train_s"] >= preset.budget_s and row["steps"] >= 1 and row["num_samples"] == 16
        assert len(row["curve"]) == preset.num_evals and row["curve"][-1][1] == row["steps"]
        assert row["sampler"]["guidance_scale"] == preset.guidance_scale
        images, labels = samples[row["method"]]
        assert images.shape == (16, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
        assert torch.equal(labels, balanced_labels(16, NUM_CLASSES))
    assert result["fid_target"] is not None
    for table in (generation_table(result), table_4(result)):
        assert all(method in table for method in GENERATION_METHODS)
    assert all(method in table_3(result) for _, method in TABLE_3_ROWS)  # paper Table 3 has no token model
    plot_fid_vs_time({**result, "hardware": "test"}, str(tmp_path / "fid.png"))
    save_sample_grid(*samples["lmd-diffusion"], data.label_names, str(tmp_path / "grid.png"))
    assert (tmp_path / "fid.png").stat().st_size > 0 and (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.parametrize("name", GENERATION_METHODS)
def test_every_method_learns_a_fixed_batch(setting, name, one_thread):
    """Each peer's conditional loss falls when it trains on one batch (so no row measures a broken method)."""
    vae, data, _ = setting
    method = build_generation_method(name, tiny_preset(label_dropout=0.0, guidance_scale=1.0), vae, 16, seed=0)
    batch = data.data.train_latents[:8] if method.space == "latent" else data.data.train_images[:8]
    labels = data.train_labels[:8]
    optimizer = torch.optim.AdamW(method.model.parameters(), lr=3e-3)

    def loss_at(seed: int) -> float:
        with torch.no_grad():
            return float(sum(method.conditional_loss(batch, labels, 0.9, torch.Generator().manual_seed(s))
                             for s in range(seed, seed + 4)))  # fmt: skip

    before = loss_at(100)
    for step in range(40):
        loss = method.conditional_loss(batch, labels, 0.9, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss_at(100) < 0.8 * before


@pytest.mark.parametrize("name", GENERATION_METHODS)
def test_every_saved_model_reloads_and_samples_the_same(setting, name, tmp_path, one_thread):
    """save_pretrained writes diffusers folders (safetensors only) that the method's own loader reads back: the
    reloaded model draws the same samples from the same seed, guidance included."""
    vae, _, _ = setting
    preset = tiny_preset()
    method = build_generation_method(name, preset, vae, 16, seed=0)
    method.model.eval()
    folder = str(tmp_path / name)
    method.save_pretrained(folder)
    labels = torch.tensor([0, 1, 2, 3])

    def draw(m):
        return m.sample(labels, preset.guidance_scale, torch.Generator().manual_seed(0))

    expected = draw(method)
    saved = read_class_labels(folder)
    assert saved["method"] == name and saved["null_class_id"] == saved["num_classes"] == NUM_CLASSES
    files = [f for _, _, names in os.walk(folder) for f in names]
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for f in files)  # no pickle
    if name.startswith("lmd"):
        pipeline = LMDPipeline.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        head = {}
        if name == "lmd-diffusion":
            head = dict(num_head_inference_steps=preset.lmd_head_steps, temperature=preset.lmd_temperature)
        images = pipeline(class_labels=labels.tolist(), guidance_scale=preset.guidance_scale,
                          num_inference_steps=preset.lmd_steps, generator=torch.Generator().manual_seed(0),
                          output_type="pt", **head).images  # fmt: skip
        reloaded = (images.float() * 2 - 1).clamp(-1, 1)
    elif name == "amused-tokens":
        transformer = UVit2DModel.from_pretrained(folder, subfolder="transformer")
        assert transformer.config.vocab_size == transformer.config.codebook_size + 1 == 17
        table = load_file(os.path.join(folder, "class_embedding", "diffusion_pytorch_model.safetensors"))
        assert torch.equal(table["tokens.weight"], method.model.class_embedding.tokens.weight)
        assert table["pooled.weight"].shape[0] == NUM_CLASSES + 1  # the null class's row
        reloaded = draw(AmusedTokensMethod.from_pretrained(folder))
    else:
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet")
        assert unet.config.num_class_embeds == NUM_CLASSES + 1
        assert DDIMScheduler.from_pretrained(folder, subfolder="scheduler").config.num_train_timesteps == 1000
        assert os.path.isdir(os.path.join(folder, "vae")) == (name == "ldm-latent")
        reloaded = draw(ConditionalDiffusionMethod.from_pretrained(folder))
    assert reloaded.shape == expected.shape and torch.allclose(reloaded, expected, atol=1e-5)
    assert torch.allclose(draw(load_generation_method(folder)), expected, atol=1e-5)  # what score_generation loads


def test_guidance_one_is_the_conditional_pass_and_labels_matter(setting, one_thread):
    vae, data, _ = setting
    method = build_generation_method("ddpm-pixel", tiny_preset(), vae, 16)
    torch.nn.init.normal_(method.model.class_embedding.weight, std=1.0)  # make the classes differ at init
    labels = torch.tensor([0, 1, 2, 3])

    def draw(scale, labels=labels):
        return method.sample(labels, scale, torch.Generator().manual_seed(0))

    assert torch.equal(draw(1.0), draw(1.0))  # seeded
    assert not torch.allclose(draw(1.0), draw(3.0))  # guidance changes samples
    assert not torch.allclose(draw(1.0), draw(1.0, torch.tensor([3, 2, 1, 0])))  # so do the labels


def test_label_dropout_and_balanced_labels():
    labels = torch.arange(1000) % 10
    dropped = drop_labels(labels, 10, 0.1, torch.Generator().manual_seed(0))
    share = float((dropped == 10).double().mean())
    assert 0.07 < share < 0.13 and torch.equal(dropped[dropped != 10], labels[dropped != 10])
    assert torch.equal(drop_labels(labels, 10, 0.0, torch.Generator()), labels)
    assert balanced_labels(20, 10).bincount().tolist() == [2] * 10


def test_sampling_is_timed_and_class_balanced(setting, one_thread):
    vae, data, classifier = setting
    method = build_generation_method("ldm-latent", tiny_preset(), vae, 16)
    images, labels, seconds = sample_classes(method, 12, 1.5, 5, torch.device("cpu"))
    assert images.shape == (12, 3, 16, 16) and seconds > 0
    assert labels.bincount().tolist() == [3] * NUM_CLASSES


def test_bad_settings_are_refused(setting):
    with pytest.raises(ValueError, match="multiples"):
        tiny_preset(eval_samples=9)
    with pytest.raises(ValueError, match="at least eval_samples"):
        tiny_preset(final_samples=4, eval_samples=8)
    with pytest.raises(ValueError, match="label_dropout > 0"):
        tiny_preset(label_dropout=0.0, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        tiny_preset(guidance_scale=0.5)
    with pytest.raises(ValueError, match="lmd_temperature"):
        tiny_preset(lmd_temperature=0.0)
    with pytest.raises(ValueError, match="distinct keys"):
        check_generation_methods(["ddpm-pixel", "ddpm-pixel"])
    with pytest.raises(ValueError, match="Unknown generation preset"):
        get_generation_preset("nope")
    vae, data, classifier = setting
    with pytest.raises(ValueError, match="classes"):
        run_generation_benchmark(tiny_preset(num_classes=10), ["ddpm-pixel"], vae, data, classifier)
    scorer = GenerationScorer(classifier, data.test.images)
    method = build_generation_method("ddpm-pixel", tiny_preset(), vae, 16)
    with pytest.raises(ValueError, match="clock"):
        train_generator_for_budget(method, data, tiny_preset(), scorer, RunSettings(clock="sundial"))


def test_the_cpu_preset_meets_the_issue():
    preset = get_generation_preset("fmnist-cpu")
    assert preset.final_samples >= 2000 and preset.eval_samples < preset.final_samples
    assert preset.lmd_schedules["lmd-mse"][0] == "cosine"  # LMD-CS
    assert all(high == 1.0 for _, _, high in preset.lmd_schedules.values())  # generation starts fully masked


def test_the_script_writes_json_tables_plot_and_grids(fashion_mnist_dir, tmp_path, one_thread, capsys):
    """benchmarks/bench_generation.py end to end on real Fashion-MNIST (500 training images), the committed
    classifier and the demo projector, at seconds-long sizes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = load_script(root, "bench_generation")
    flags = ["--budget_s", "1", "--num_evals", "1", "--eval_samples", "20", "--final_samples", "20", "--ddim_steps",
             "2", "--lmd_steps", "2", "--lmd_head_steps", "2", "--lmd_temperature", "0.7", "--lmd_num_layers", "3",
             "--lmd_diffusion_batch_mul", "2", "--max_train_samples", "500", "--projector_path",
             os.path.join(root, "assets/demo-projector"), "--output", str(tmp_path / "gen.json"),
             "--plots_dir", str(tmp_path), "--markdown", str(tmp_path / "tables.md"),
             "--work_dir", str(tmp_path / "work")]  # fmt: skip
    result = script.main(flags)
    assert sorted(os.listdir(tmp_path / "work" / "models")) == sorted(GENERATION_METHODS)
    with open(tmp_path / "gen.json") as f:
        saved = json.load(f)
    assert [row["method"] for row in saved["rows"]] == list(GENERATION_METHODS)
    sampling_heads = [row for row in saved["rows"] if row["method"] in ("lmd-diffusion", "lmd-categorical")]
    assert saved["config"]["lmd_temperature"] == 0.7
    assert saved["config"]["lmd_heads"]["lmd-diffusion"] == {"diffusion_batch_mul": 2, "diffusion_head_width": 64}
    model_config = os.path.join(tmp_path, "work", "models", "lmd-diffusion", "transformer", "config.json")
    with open(model_config) as f:
        trained = json.load(f)
    assert trained["diffusion_batch_mul"] == 2 and trained["num_layers"] == 3  # the flags reached the trained model
    assert saved["config"]["lmd_overrides"]["num_layers"] == 3  # and the JSON
    with pytest.raises(SystemExit):  # a head flag without lmd-diffusion would do nothing
        script.parse_args(["--output", "x.json", "--methods", "ldm-latent", "--lmd_diffusion_head_width", "32"])
    with pytest.raises(SystemExit):  # nor would a ViT size without an LMD method
        script.parse_args(["--output", "x.json", "--methods", "ldm-latent", "--lmd_hidden_size", "192"])
    assert all(row["sampler"]["temperature"] == 0.7 for row in sampling_heads)
    assert saved["classifier"]["test_accuracy"] > 0.9 and saved["num_test_images"] == 10000
    assert saved["fid_floor"]["20"]["fid"] < min(row["fid"] for row in result["rows"])  # untrained models
    assert "Table 3" in capsys.readouterr().out and "Table 4" in (tmp_path / "tables.md").read_text()
    for name in ["fid_vs_time", *GENERATION_METHODS]:
        assert (tmp_path / f"generation_fmnist_cpu_{name}.png").stat().st_size > 0

    # benchmarks/score_generation.py re-scores the saved models: with no overrides, the benchmark's own final scores.
    rescore = load_script(root, "score_generation")
    models = [str(tmp_path / "work" / "models" / name) for name in ("lmd-diffusion", "ldm-latent")]
    again = rescore.main([*models, "--num_samples", "20", "--output", str(tmp_path / "rescore.json")])
    rows = {row["method"]: row for row in result["rows"]}
    for row in again["rows"]:
        for key in ("fid", "conditional_accuracy", "precision", "recall", "density", "coverage"):
            assert row[key] == pytest.approx(rows[row["method"]][key], rel=1e-4, abs=1e-6), (row["method"], key)
        assert "class_recall" not in row  # 2 samples per class: too few for k = 3 neighbours
    assert again["rows"][0]["sampler"]["temperature"] == 0.7  # the saved sampler setting
    assert again["real_train_images"]["fid"] < min(row["fid"] for row in again["rows"])
    hotter = rescore.main([models[0], "--num_samples", "60", "--lmd_temperature", "1.5", "--guidance_scale", "1",
                           "--output", str(tmp_path / "hot.json")])  # fmt: skip
    row = hotter["rows"][0]
    assert row["sampler"]["temperature"] == 1.5 and row["guidance_scale"] == 1.0 and row["num_samples"] == 60
    assert all(0.0 <= row[k] <= 1.0 for k in ("class_recall", "class_precision", "class_coverage", "coverage"))
    assert hotter["real_train_images"]["class_recall"] > row["class_recall"]  # untrained model, real images
    classes = list(hotter["real_train_images"]["per_class"])  # each class by name, then a table of them
    assert classes == list(row["per_class"]) and classes[0] == "T-shirt/top" and len(classes) == 10
    assert sum(c["recall"] for c in row["per_class"].values()) / 10 == pytest.approx(row["class_recall"])
    assert "Ankle boot" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--lmd_temperature only change LMD's sampling heads"):
        rescore.main([models[1], "--num_samples", "20", "--lmd_temperature", "0.5", "--output", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="class_labels.json"):
        rescore.main([str(tmp_path), "--num_samples", "20", "--output", str(tmp_path / "x.json")])


def load_script(root: str, name: str):
    """A benchmarks/ script as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, f"benchmarks/{name}.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_categorical_row_uses_the_projectors_codebook_and_trains(setting, one_thread):
    vae, data, _ = setting
    method = build_generation_method("lmd-categorical", tiny_preset(), vae, 16, seed=0)
    model = method.model
    assert model.config.head_type == "categorical" and model.config.codebook_size == vae.config.num_vq_embeddings
    assert torch.equal(model.codebook, vq_codebook(vae))
    assert method.mask_scheduler.config.schedule == "truncnorm" and method.mask_scheduler.config.mask_ratio_max == 1.0
    loss = method.conditional_loss(data.data.train_latents[:8], data.train_labels[:8], 0.5, torch.Generator())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.decoder_logits.weight.grad is not None
    images = method.sample(torch.tensor([0, 1]), 1.5, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    setting_ = method.sampler_setting()
    assert setting_["head"] == "categorical" and setting_["temperature"] == 1.0 and "MaskGIT" in setting_["sampler"]
