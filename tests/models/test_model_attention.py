"""LMDModel's attention on diffusers' machinery: processors, fused projections, slicing, backends, LoRA names, and
checkpoints saved with the former fused ``qkv`` / ``q`` + ``kv`` / ``proj`` layers (issue 20, item 7)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusers_lmd import LMDForImageClassification, LMDModel
from diffusers_lmd.masking import random_mask
from diffusers_lmd.models.attention_processor import LMDAttention, LMDAttnProcessor, LMDSlicedAttnProcessor
from diffusers_lmd.models.legacy_keys import LEGACY_PROJECTIONS

# Saved by the code before this change (commit 4f7965a: torch.manual_seed(0), LMDModel(**config.json),
# save_pretrained): a tiny class- and text-conditional LMDModel with fused attention keys, and its output on fixed
# inputs (expected_output.safetensors).
FUSED_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lmd_model_fused_attention"
HAS_PEFT = importlib.util.find_spec("peft") is not None


def text_model(seed: int = 0, **overrides) -> LMDModel:
    torch.manual_seed(seed)
    config = dict(sample_size=8, in_channels=4, patch_size=2, cross_attention_dim=12, num_class_embeds=3)
    return LMDModel.from_preset("tiny", **{**config, **overrides}).eval()


def text_inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(3, 16, 0.5, generator=g)
    mask[0, :] = 0  # ragged rows: the encoder pads, so the self-attention mask is used too
    mask[1, :12] = 1
    return dict(
        latents=torch.randn(3, 4, 8, 8, generator=g),
        mask=mask,
        class_labels=[0, 1, 3],
        encoder_hidden_states=torch.randn(3, 5, 12, generator=g),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]),
        return_loss=False,
    )


def sample(model: LMDModel, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


def fused_state_dict(model: torch.nn.Module) -> dict:
    """``model``'s state dict in the former layout: to_q/to_k/to_v/to_out.0 fused back into qkv, q + kv, proj."""
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if not isinstance(module, LMDAttention):
            continue
        layout = ("q", "kv", "proj") if module.is_cross_attention else ("qkv", "proj")
        for old in layout:
            for kind in ("weight", "bias"):
                parts = [state.pop(f"{name}.{new}.{kind}") for new in LEGACY_PROJECTIONS[old]]
                state[f"{name}.{old}.{kind}"] = torch.cat(parts)
    return state


def test_attention_layers_have_diffusers_names_and_processors():
    model = text_model()
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {"to_q", "to_k", "to_v"} <= names  # PEFT's LoraConfig(target_modules=["to_q", "to_k", "to_v"]) finds them
    assert "blocks.0.attn.to_out.0" in dict(model.named_modules())
    assert not {"qkv", "kv", "proj"} & names
    processors = model.attn_processors
    num_layers = model.config.num_layers + model.config.decoder_num_layers
    assert len(processors) == 2 * num_layers  # self- and cross-attention in every block
    assert "blocks.0.attn.processor" in processors and "decoder_blocks.0.cross_attn.processor" in processors
    assert all(type(p) is LMDAttnProcessor for p in processors.values())


def test_set_attn_processor_takes_one_processor_or_a_dict_and_keeps_outputs():
    model, inputs = text_model(), text_inputs()
    expected = sample(model, inputs)
    model.set_attn_processor(LMDSlicedAttnProcessor(1))
    assert all(isinstance(p, LMDSlicedAttnProcessor) for p in model.attn_processors.values())
    torch.testing.assert_close(sample(model, inputs), expected)
    model.set_attn_processor({name: LMDAttnProcessor() for name in model.attn_processors})
    assert all(type(p) is LMDAttnProcessor for p in model.attn_processors.values())
    with pytest.raises(ValueError, match="number of attention layers"):
        model.set_attn_processor({"blocks.0.attn.processor": LMDAttnProcessor()})


def test_fuse_qkv_projections_keeps_outputs_and_unfuses():
    model, inputs = text_model(), text_inputs()
    expected = sample(model, inputs)
    model.fuse_qkv_projections()
    assert hasattr(model.blocks[0].attn, "to_qkv") and hasattr(model.blocks[0].cross_attn, "to_kv")
    torch.testing.assert_close(sample(model, inputs), expected)
    model.unfuse_qkv_projections()
    assert not hasattr(model.blocks[0].attn, "to_qkv") and not model.blocks[0].attn.fused_projections
    torch.testing.assert_close(sample(model, inputs), expected)


@pytest.mark.parametrize("slice_size", ["auto", "max", 1, 2])
def test_attention_slicing_keeps_outputs(slice_size):
    model, inputs = text_model(), text_inputs()
    expected = sample(model, inputs)
    model.set_attention_slice(slice_size)
    processors = model.attn_processors.values()
    assert all(isinstance(p, LMDSlicedAttnProcessor) for p in processors)
    torch.testing.assert_close(sample(model, inputs), expected)
    model.set_attention_slice(None)
    assert all(type(p) is LMDAttnProcessor for p in model.attn_processors.values())


def test_attention_slicing_refuses_a_size_no_layer_can_take_before_changing_any():
    model = text_model()  # tiny: encoder and decoder have 4 heads
    for bad in (5, 0, "half", 1.5):
        with pytest.raises(ValueError, match="slice_size must be"):
            model.set_attention_slice(bad)
    assert all(type(p) is LMDAttnProcessor for p in model.attn_processors.values())


def test_pipeline_enable_attention_slicing_reaches_the_transformer(make_pipeline):
    pipe = make_pipeline()
    pipe.enable_attention_slicing()
    assert all(isinstance(p, LMDSlicedAttnProcessor) for p in pipe.transformer.attn_processors.values())
    pipe.disable_attention_slicing()
    assert all(type(p) is LMDAttnProcessor for p in pipe.transformer.attn_processors.values())


def test_attention_backend_is_set_on_every_processor_and_kept_by_slicing():
    model, inputs = text_model(), text_inputs()
    expected = sample(model, inputs)
    model.set_attention_backend("native")
    assert all(p._attention_backend == "native" for p in model.attn_processors.values())
    torch.testing.assert_close(sample(model, inputs), expected)
    model.set_attention_slice("auto")
    assert all(p._attention_backend == "native" for p in model.attn_processors.values())
    model.reset_attention_backend()
    assert all(p._attention_backend is None for p in model.attn_processors.values())
    with pytest.raises(ValueError, match="must be one of"):
        model.set_attention_backend("no-such-backend")


def test_attention_init_uses_the_fused_layers_fans():
    """MAE's xavier init on the fused qkv: to_q/to_k/to_v share its bound, sqrt(6 / (dim + 3 dim))."""
    model = LMDModel.from_preset("tiny", sample_size=8)
    attn, dim = model.blocks[0].attn, model.config.hidden_size
    bound = math.sqrt(6 / (dim + 3 * dim))
    weights = torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight])
    assert weights.abs().max() <= bound and weights.abs().max() > 0.9 * bound
    assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert all(layer.bias.abs().sum() == 0 for layer in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]))


@pytest.mark.skipif(HAS_PEFT, reason="checks the message without peft")
def test_add_adapter_without_peft_says_peft_is_required():
    with pytest.raises(ValueError, match="PEFT is not installed"):
        text_model().add_adapter(object())


@pytest.mark.skipif(not HAS_PEFT, reason="peft is not installed")
def test_lora_attaches_to_the_attention_projections():
    from peft import LoraConfig

    model, inputs = text_model(), text_inputs()
    expected = sample(model, inputs)
    model.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    assert any("lora_A" in name for name, _ in model.blocks[0].attn.to_q.named_parameters())
    torch.testing.assert_close(sample(model, inputs), expected)  # LoRA's B starts at zero


def test_checkpoint_saved_with_fused_attention_keys_loads_and_gives_the_same_outputs(tmp_path):
    keys = load_file(FUSED_FIXTURE / "diffusion_pytorch_model.safetensors")
    assert "blocks.0.attn.qkv.weight" in keys and "decoder_blocks.0.cross_attn.kv.weight" in keys
    expected = load_file(FUSED_FIXTURE / "expected_output.safetensors")
    model = LMDModel.from_pretrained(FUSED_FIXTURE).eval()
    inputs = {k: v for k, v in expected.items() if k != "sample"}
    torch.testing.assert_close(sample(model, {**inputs, "return_loss": False}), expected["sample"])
    model.save_pretrained(tmp_path)  # the split weights are their own tensors: safetensors saves them
    resaved = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    assert "blocks.0.attn.to_q.weight" in resaved and not any(".qkv." in k or ".kv." in k for k in resaved)
    reloaded = LMDModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(sample(reloaded, {**inputs, "return_loss": False}), expected["sample"])


@pytest.mark.parametrize("low_cpu_mem_usage", [True, False])
def test_from_pretrained_maps_fused_keys(tmp_path, low_cpu_mem_usage):
    model, inputs = text_model(), text_inputs()
    model.save_pretrained(tmp_path)
    save_file(fused_state_dict(model), tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = LMDModel.from_pretrained(tmp_path, low_cpu_mem_usage=low_cpu_mem_usage).eval()
    torch.testing.assert_close(sample(loaded, inputs), sample(model, inputs), rtol=0, atol=0)


def test_load_state_dict_accepts_fused_keys():
    """A training checkpoint's resume (accelerate) and EMA copies go through ``nn.Module.load_state_dict``."""
    model, inputs = text_model(seed=0), text_inputs()
    other = text_model(seed=1)
    other.load_state_dict(fused_state_dict(model))  # strict
    torch.testing.assert_close(sample(other, inputs), sample(model, inputs), rtol=0, atol=0)


def test_classifier_checkpoint_with_fused_keys_loads(tmp_path):
    torch.manual_seed(0)
    config = dict(sample_size=8, hidden_size=32, num_layers=2, num_attention_heads=4)
    classifier = LMDForImageClassification(num_labels=3, **config).eval()
    classifier.save_pretrained(tmp_path)
    save_file(fused_state_dict(classifier), tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = LMDForImageClassification.from_pretrained(tmp_path).eval()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents=latents).logits, classifier(latents=latents).logits)
