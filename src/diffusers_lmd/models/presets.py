"""Named ``LMDModel`` architectures: ``LMDModel.from_preset(name, **overrides)``."""

LMD_PRESETS: dict[str, dict] = {
    # For unit tests: a few thousand parameters.
    "tiny": dict(hidden_size=32, num_layers=2, num_attention_heads=2, decoder_hidden_size=32,
                 decoder_num_layers=1, decoder_num_attention_heads=2),
    # CPU demos: trains in minutes on two cores.
    "small": dict(hidden_size=192, num_layers=6, num_attention_heads=3, decoder_hidden_size=128,
                  decoder_num_layers=2, decoder_num_attention_heads=4),
    # The paper's discriminative ViT-B, 12 + 8 blocks.
    "base": dict(hidden_size=768, num_layers=12, num_attention_heads=12, decoder_hidden_size=512,
                 decoder_num_layers=8, decoder_num_attention_heads=16),
    # The paper's generative trade-off: lighter encoder, heavier decoder.
    "base-gen": dict(hidden_size=768, num_layers=8, num_attention_heads=12, decoder_hidden_size=512,
                     decoder_num_layers=12, decoder_num_attention_heads=16),
    "large": dict(hidden_size=1024, num_layers=24, num_attention_heads=16, decoder_hidden_size=512,
                  decoder_num_layers=8, decoder_num_attention_heads=16),
}  # fmt: skip
