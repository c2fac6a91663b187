"""LMDForImageClassification: head shapes and loss, building from LMD folders, save/load, layer-wise LR decay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusers_lmd import LMDForImageClassification, LMDImageClassifierOutput, LMDModel
from diffusers_lmd.classification import apply_layer_decay
from diffusers_lmd.pipelines import LMDPipeline


@pytest.fixture
def components(make_pipeline_components):
    parts = make_pipeline_components("vq", seed=0)
    torch.manual_seed(1)  # a non-zero CLS token and head, so pooling modes and round trips are tested for real
    with torch.no_grad():
        parts["transformer"].cls_token.normal_()
    return parts


@pytest.fixture
def classifier(components):
    torch.manual_seed(0)
    model = LMDForImageClassification.from_lmd_model(
        components["transformer"], num_labels=5, projector=components["vae"]
    )
    torch.nn.init.normal_(model.classifier.weight)
    return model.eval()


def images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_logits_shape_and_cross_entropy_loss(classifier):
    labels = torch.tensor([0, 4, 2])
    out = classifier(pixel_values=images(), labels=labels)
    assert isinstance(out, LMDImageClassifierOutput)
    assert out.logits.shape == (3, 5)
    assert out.pooled_output.shape == (3, 32)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert classifier(pixel_values=images()).loss is None
    loss, logits = classifier(pixel_values=images(), labels=labels, return_dict=False)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(loss, out.loss)


def test_pixel_values_go_through_the_projector(classifier, components):
    from diffusers_lmd import encode_images

    latents = encode_images(components["vae"], images())
    torch.testing.assert_close(classifier(latents=latents).logits, classifier(pixel_values=images()).logits)


def test_encoder_sees_every_token_and_matches_the_lmd_encoder(classifier, components):
    latents = torch.randn(2, 4, 8, 8)
    lmd = components["transformer"]
    expected, _, _ = lmd.forward_encoder(latents, torch.zeros(2, 16))
    assert expected.shape == (2, 17, 32)  # CLS + all 16 tokens
    torch.testing.assert_close(classifier.forward_features(latents), expected[:, 1:].mean(dim=1))


def test_cls_pooling_uses_the_cls_token(components):
    model = LMDForImageClassification.from_lmd_model(components["transformer"], num_labels=3, pooling="cls")
    latents = torch.randn(2, 4, 8, 8)
    expected, _, _ = components["transformer"].forward_encoder(latents, torch.zeros(2, 16))
    torch.testing.assert_close(model.forward_features(latents), expected[:, 0])


def test_decoder_is_dropped_and_projector_frozen(classifier):
    names = list(classifier.state_dict())
    assert not any(name.startswith("encoder.decoder") or name == "encoder.mask_token" for name in names)
    assert any(name.startswith("projector.") for name in names)
    assert not any(p.requires_grad for p in classifier.projector.parameters())
    classifier.train()
    assert not classifier.projector.training
    classifier(pixel_values=images(), labels=torch.tensor([0, 1, 2])).loss.backward()
    trainable = [(n, p) for n, p in classifier.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), "every trainable weight must get a gradient"


def test_save_load_round_trip_gives_identical_logits(classifier, tmp_path):
    classifier.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LMDForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.projector_class_name == "VQModel"
    assert torch.equal(loaded(pixel_values=images()).logits, classifier(pixel_values=images()).logits)


def test_latents_only_classifier_round_trip(components, tmp_path):
    model = LMDForImageClassification.from_lmd_model(components["transformer"], num_labels=4, label_names=list("abcd"))
    model.save_pretrained(tmp_path)
    loaded = LMDForImageClassification.from_pretrained(tmp_path)
    assert loaded.projector is None and loaded.config.label_names == list("abcd")
    latents = torch.randn(2, 4, 8, 8)
    assert torch.equal(loaded(latents=latents).logits, model(latents=latents).logits)
    with pytest.raises(ValueError, match="no embedded projector"):
        loaded(pixel_values=images())


def test_from_pipeline_folder_embeds_projector_and_encoder_weights(components, tmp_path):
    LMDPipeline(**components).save_pretrained(tmp_path)
    model = LMDForImageClassification.from_lmd_pretrained(tmp_path, num_labels=10)
    lmd_state = components["transformer"].state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, lmd_state[name]), name
    for name, value in model.projector.state_dict().items():
        assert torch.equal(value, components["vae"].state_dict()[name]), name
    assert model.config.num_layers == components["transformer"].config.num_layers


def test_from_model_folder_is_latents_only(components, tmp_path):
    components["transformer"].save_pretrained(tmp_path)
    model = LMDForImageClassification.from_lmd_pretrained(tmp_path, num_labels=2)
    assert model.projector is None
    with_projector = LMDForImageClassification.from_lmd_pretrained(tmp_path, 2, projector=components["vae"])
    assert with_projector.projector is not None


def test_bad_inputs_raise_clear_errors(classifier, components, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        classifier(pixel_values=images(), latents=torch.randn(3, 4, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        classifier(latents=torch.randn(3, 3, 8, 8))
    with pytest.raises(ValueError, match="pooling"):
        LMDForImageClassification(pooling="max")
    with pytest.raises(ValueError, match="num_labels"):
        LMDForImageClassification(num_labels=1)
    with pytest.raises(ValueError, match="neither an LMDPipeline folder"):
        LMDForImageClassification.from_lmd_pretrained(tmp_path, num_labels=2)
    with pytest.raises(TypeError, match="LMDModel"):
        LMDForImageClassification.from_lmd_model(components["vae"], num_labels=2)


def test_layer_decay_scales_learning_rate_by_depth(classifier):
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in classifier.parameters() if p.requires_grad and p.ndim > 1], "weight_decay": 0.05},
            {"params": [p for p in classifier.parameters() if p.requires_grad and p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    apply_layer_decay(optimizer, classifier, 0.5, classifier.layer_id, classifier.num_layers)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = dict(classifier.named_parameters())
    top = classifier.num_layers + 1  # 3 for the tiny preset
    assert lr_of[id(params["classifier.weight"])] == (1e-3, 0.05)
    assert lr_of[id(params["encoder.blocks.1.mlp.0.weight"])] == (1e-3 * 0.5, 0.05)
    assert lr_of[id(params["encoder.blocks.0.norm1.bias"])] == (1e-3 * 0.5**2, 0.0)
    assert lr_of[id(params["encoder.patch_embed.weight"])] == (1e-3 * 0.5**top, 0.05)
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    assert len(lr_of) == len(trainable) == sum(len(g["params"]) for g in optimizer.param_groups)
    with pytest.raises(ValueError, match="layer_decay"):
        apply_layer_decay(optimizer, classifier, 1.5, classifier.layer_id, classifier.num_layers)


def test_from_lmd_model_rejects_an_incompatible_projector(make_pipeline_components):
    parts = make_pipeline_components("kl")
    model = LMDModel.from_preset("tiny", sample_size=8, in_channels=3)
    with pytest.raises(ValueError, match="in_channels"):
        LMDForImageClassification.from_lmd_model(model, num_labels=2, projector=parts["vae"])


def test_gradient_checkpointing_gives_the_same_gradients(classifier):
    latents, labels = torch.randn(3, 4, 8, 8), torch.tensor([0, 1, 2])
    classifier.train()
    classifier(latents=latents, labels=labels).loss.backward()
    expected = {n: p.grad.clone() for n, p in classifier.named_parameters() if p.grad is not None}
    classifier.zero_grad()
    classifier.enable_gradient_checkpointing()
    assert classifier.encoder.gradient_checkpointing
    classifier(latents=latents, labels=labels).loss.backward()
    for name, grad in expected.items():
        torch.testing.assert_close(dict(classifier.named_parameters())[name].grad, grad, msg=name)
