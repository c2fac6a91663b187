"""The flags of ``training/train_lmd.py``: data + shared training flags + LMD's own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

from ...models import LMD_PRESETS
from ...models.diffusion_head import HEAD_TYPES
from ...schedulers import MASK_SCHEDULES
from .common import HelpFormatter, add_pretrained_args, add_training_args, check_training_args
from .data import add_data_args, add_label_column_arg

DEFAULT_CONDITIONING_DROPOUT = 0.1
ATTENTION_BACKENDS = tuple(backend.value for backend in AttentionBackendName)
MISSING_PROJECTOR = (
    "--projector_path is required: a VQModel/AutoencoderKL folder or Hub repository (e.g. stabilityai/sd-vae-ft-mse), "
    "or an LMD pipeline whose vae/ is used. Train one with training/train_projector.py, or use the committed "
    "assets/demo-projector or assets/fashion-mnist-projector; or start from an LMD pipeline with "
    "--pretrained_model_name_or_path, whose vae/ is then the projector."
)
# The diffusion head's size (with --head_type diffusion), which overrides the preset's when given.
DIFFUSION_HEAD_OVERRIDES = (
    ("diffusion_head_width", int, "With --head_type diffusion: the head's MLP width (default: the decoder's)."),
    ("diffusion_head_layers", int, "With --head_type diffusion: the head's residual blocks."),
    ("diffusion_batch_mul", int, "With --head_type diffusion: noised copies of each token per step (MAR: 4)."),
)
DIFFUSION_HEAD_FLAGS = tuple(name for name, _, _ in DIFFUSION_HEAD_OVERRIDES)
# Architecture flags that override the preset when given.
MODEL_OVERRIDES = (
    ("patch_size", int, "Side of a latent patch (one token per patch)."),
    ("hidden_size", int, "Encoder width."),
    ("num_layers", int, "Encoder blocks."),
    ("num_attention_heads", int, "Encoder attention heads."),
    ("decoder_hidden_size", int, "Decoder width."),
    ("decoder_num_layers", int, "Decoder blocks."),
    ("decoder_num_attention_heads", int, "Decoder attention heads."),
    ("mlp_ratio", float, "MLP width as a multiple of the block width."),
    ("num_condition_tokens", int, "With --label_column: encoder tokens carrying the class (MAR's buffer tokens)."),
    *DIFFUSION_HEAD_OVERRIDES,
)


def add_lmd_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """LMD's own flags: projector, architecture, mask-ratio schedule, latent cache and speed options."""
    group = parser.add_argument_group("LMD")
    group.add_argument(
        "--projector_path",
        type=str,
        default=None,
        help="(Required.) The frozen projector: a VQModel/AutoencoderKL folder or Hub repository (e.g. the output of "
        "training/train_projector.py, or stabilityai/sd-vae-ft-mse), or an LMD or other diffusers pipeline, "
        "local or on the Hub, whose vae/ is used. Safetensors weights only.",
    )
    group.add_argument(
        "--projector_subfolder",
        type=str,
        default=None,
        help="The folder of --projector_path holding the projector (default: found through model_index.json).",
    )
    group.add_argument(
        "--upcast_projector",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Run the frozen projector in fp32 under --mixed_precision fp16/bf16 (--no-upcast_projector: in that "
        "dtype). Default: fp32 when its config sets force_upcast (Stable Diffusion's VAE does), else the "
        "mixed-precision dtype, as diffusers' example scripts cast it.",
    )
    group.add_argument(
        "--estimate_latent_stats",
        action="store_true",
        help="Re-estimate the projector's scaling_factor/shift_factor on the training images before training.",
    )
    group.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Start a new run from these LMD weights (not a resume): an LMD pipeline folder or Hub repository (its "
        "transformer, and its vae unless --projector_path is given) or an LMDModel folder or repository (then "
        "--projector_path is required). --revision / --variant / --cache_dir apply to it. The architecture and "
        "head come from it; the class embeddings are made anew when --label_column's classes differ.",
    )
    group.add_argument(
        "--preset", type=str, default=None, choices=sorted(LMD_PRESETS), help="LMDModel size (None: small)."
    )
    for name, kind, text in MODEL_OVERRIDES:
        group.add_argument(f"--{name}", type=kind, default=None, help=f"{text} Default: the preset's.")
    group.add_argument(
        "--mask_schedule",
        type=str,
        default="cosine",
        choices=MASK_SCHEDULES,
        help="How the mask ratio rises; truncnorm draws each step's ratio as MAR does (for generative models, with "
        "--mask_ratio_min 0.7 --mask_ratio_max 1.0).",
    )
    group.add_argument(
        "--mask_ratio_min", type=float, default=0.15, help="Mask ratio at the first step (truncnorm: the lowest)."
    )
    group.add_argument(
        "--mask_ratio_max",
        type=float,
        default=0.75,
        help="Mask ratio at the end of the rise (truncnorm: the highest and the mean), at most 1: generation starts "
        "from a fully masked latent, so generative models should train up to 1.",
    )
    group.add_argument(
        "--cache_latents",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Encode the training images once and reuse the latents (--no-cache_latents encodes every step).",
    )
    group.add_argument(
        "--latent_cache_dir",
        type=str,
        default=None,
        help="Where latent caches live (default: $HF_DATASETS_CACHE/diffusers_lmd_latents).",
    )
    group.add_argument("--encode_batch_size", type=int, default=64, help="Images per projector call when caching.")
    group.add_argument("--eval_batch_size", type=int, default=16, help="Images per batch in held-out evaluation.")
    group.add_argument("--compile", action="store_true", help="torch.compile the model (through Accelerate).")
    group.add_argument(
        "--gradient_checkpointing", action="store_true", help="Recompute activations in backward to save memory."
    )
    group.add_argument(
        "--attention_backend",
        type=str,
        default=None,
        choices=ATTENTION_BACKENDS,
        help="diffusers' attention backend for the transformer (e.g. flash, _native_cudnn, sage, xformers); "
        "None: PyTorch's scaled_dot_product_attention.",
    )
    group.add_argument(
        "--enable_xformers_memory_efficient_attention",
        action="store_true",
        help="As in diffusers' scripts: the xformers attention backend (needs the xformers package).",
    )
    add_generation_args(parser)
    return parser


def add_generation_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Conditioning (class labels, captions) and the sampling head, for models that generate."""
    group = parser.add_argument_group("conditioning and generation")
    add_label_column_arg(
        group,
        None,
        "Class-conditional training from this datasets.ClassLabel column (e.g. `label`); its names are saved as the "
        "pipeline's id2label.",
    )
    group.add_argument(
        "--caption_column", type=str, default=None, help="Text-conditional training from this column of captions."
    )
    group.add_argument(
        "--text_encoder_name_or_path",
        type=str,
        default=None,
        help="With --caption_column: a frozen CLIP text model and tokenizer (a folder with text_encoder/ and "
        "tokenizer/, as a diffusers pipeline has, or one folder or Hub id holding both).",
    )
    group.add_argument(
        "--sampling_guidance_scale",
        type=float,
        default=None,
        help="The saved pipeline's default guidance_scale for class-conditional generation (its sampling_defaults; "
        "None: the pipeline's own default).",
    )
    group.add_argument(
        "--sampling_temperature",
        type=float,
        default=None,
        help="The saved pipeline's default sampling temperature, with --head_type diffusion or categorical (its "
        "sampling_defaults; None: 1).",
    )
    group.add_argument(
        "--conditioning_dropout_prob",
        type=float,
        default=None,
        help="Share of labels / captions replaced by the null class / empty prompt, for classifier-free guidance "
        f"(with --label_column or --caption_column; None: {DEFAULT_CONDITIONING_DROPOUT}).",
    )
    group.add_argument(
        "--encoder_cross_attention",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="With --caption_column: cross-attention in the encoder blocks too, not only the decoder's "
        "(--no-encoder_cross_attention: decoder only; None: both).",
    )
    group.add_argument(
        "--head_type",
        type=str,
        default=None,
        choices=HEAD_TYPES,
        help="mse: LMD's L_LIR head (predicts the mean); diffusion: a per-token diffusion head that samples (MAR); "
        "categorical: logits over a VQModel projector's codes, sampled MaskGIT-style (the codebook size and codes "
        "come from --projector_path). None: mse, or the pretrained model's.",
    )
    group.add_argument(
        "--mse_loss_weight",
        type=float,
        default=0.0,
        help="With --head_type diffusion or categorical: also train an MSE head with this loss weight (0: the "
        "sampling head's loss only).",
    )
    return parser


def build_lmd_parser(description: str = "Train an LMD model (Latent Masking Diffusion).") -> argparse.ArgumentParser:
    """The parser of ``train_lmd.py``: data flags, shared training flags, LMD flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_data_args(parser)
    add_training_args(parser)
    add_pretrained_args(parser)
    add_lmd_args(parser)
    parser.set_defaults(output_dir="lmd-model")
    return parser


def check_lmd_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the first LMD or training flag that cannot work."""
    check_training_args(args)
    if not args.projector_path and not args.pretrained_model_name_or_path:
        raise ValueError(MISSING_PROJECTOR)
    if args.pretrained_model_name_or_path:
        architecture = [f"--{name}" for name in ("preset", "head_type", "mse_loss_weight", *model_overrides(args))
                        if getattr(args, name)]  # fmt: skip
        if architecture:
            raise ValueError(
                f"{', '.join(architecture)} would build a new model, but --pretrained_model_name_or_path brings its "
                "own architecture and head: drop them, or start without --pretrained_model_name_or_path."
            )
    else:
        args.preset, args.head_type = args.preset or "small", args.head_type or "mse"
    if not 0.0 <= args.mask_ratio_min <= args.mask_ratio_max <= 1.0:
        raise ValueError(
            f"Need 0 <= --mask_ratio_min <= --mask_ratio_max <= 1, got {args.mask_ratio_min} and {args.mask_ratio_max}."
        )
    check_generation_args(args)
    check_attention_args(args)
    for name in ("encode_batch_size", "eval_batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}.")


def check_attention_args(args: argparse.Namespace) -> None:
    """``--enable_xformers_memory_efficient_attention`` is ``--attention_backend xformers``; a backend whose package
    or hardware is missing is refused here, before any work."""
    if args.enable_xformers_memory_efficient_attention:
        if args.attention_backend not in (None, "xformers"):
            raise ValueError(
                "--enable_xformers_memory_efficient_attention is --attention_backend xformers: pass one of the two."
            )
        args.attention_backend = "xformers"
    if args.attention_backend is not None:
        try:
            _check_attention_backend_requirements(AttentionBackendName(args.attention_backend))
        except (ImportError, RuntimeError, ValueError) as err:
            raise ValueError(
                f"--attention_backend {args.attention_backend} cannot run here: {err} Leave it unset for PyTorch's "
                "scaled_dot_product_attention."
            ) from err


def check_generation_args(args: argparse.Namespace) -> None:
    """Raise a ``ValueError`` naming the first conditioning or head flag that cannot work."""
    if bool(args.caption_column) != bool(args.text_encoder_name_or_path):
        raise ValueError(
            "--caption_column and --text_encoder_name_or_path go together: captions need a text encoder, and a text "
            "encoder needs captions."
        )
    conditioned = bool(args.label_column or args.caption_column)
    if args.conditioning_dropout_prob is not None:
        if not conditioned:
            raise ValueError(
                "--conditioning_dropout_prob drops class labels or captions: it needs --label_column or "
                "--caption_column."
            )
        if not 0.0 <= args.conditioning_dropout_prob < 1.0:
            raise ValueError(f"--conditioning_dropout_prob must lie in [0, 1), got {args.conditioning_dropout_prob}.")
    elif conditioned:
        args.conditioning_dropout_prob = conditioning_dropout(args)
    if args.sampling_guidance_scale is not None and (not args.label_column or args.sampling_guidance_scale < 1):
        raise ValueError("--sampling_guidance_scale sets class-conditional generation's default guidance: it needs "
                         f"--label_column and a value >= 1, got {args.sampling_guidance_scale}.")  # fmt: skip
    if args.sampling_temperature is not None and (args.head_type == "mse" or args.sampling_temperature <= 0):
        raise ValueError("--sampling_temperature sets a sampling head's default temperature: it needs --head_type "
                         f"diffusion or categorical and a value > 0, got {args.sampling_temperature}.")  # fmt: skip
    if args.encoder_cross_attention is not None and not args.caption_column:
        raise ValueError("--(no-)encoder_cross_attention places the text cross-attention: it needs --caption_column.")
    given_head_flags = [f"--{name}" for name in DIFFUSION_HEAD_FLAGS if getattr(args, name) is not None]
    if given_head_flags and args.head_type != "diffusion":
        raise ValueError(f"{', '.join(given_head_flags)} size the diffusion head: they need --head_type diffusion.")
    if args.mse_loss_weight < 0 or (args.mse_loss_weight and args.head_type not in ("diffusion", "categorical")):
        raise ValueError(
            f"--mse_loss_weight {args.mse_loss_weight} weighs an extra MSE loss beside a sampling head: it must be "
            ">= 0 and needs --head_type diffusion or categorical."
        )
    if args.num_condition_tokens is not None and not args.label_column:
        raise ValueError("--num_condition_tokens sets the class tokens: it needs --label_column.")


def model_overrides(args: argparse.Namespace) -> dict:
    """The architecture flags given (:data:`MODEL_OVERRIDES`), which override the preset's values."""
    return {name: getattr(args, name) for name, _, _ in MODEL_OVERRIDES if getattr(args, name) is not None}


def conditioning_dropout(args: argparse.Namespace) -> float:
    """The share of labels / captions dropped for classifier-free guidance: the flag, or its default."""
    given = args.conditioning_dropout_prob
    return DEFAULT_CONDITIONING_DROPOUT if given is None else given


def lmd_model_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~diffusers_lmd.training.lmd.setup.build_lmd_model` the flags set (all but the
    projector and the conditioning sizes, which come from the data and the text encoder)."""
    return dict(
        resolution=args.resolution,
        preset=args.preset,
        overrides=model_overrides(args),
        head_type=args.head_type,
        mse_loss_weight=args.mse_loss_weight,
        class_dropout_prob=conditioning_dropout(args),
        encoder_cross_attention=args.encoder_cross_attention is not False,
    )


def parse_lmd_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check ``train_lmd.py`` flags (``sys.argv`` when ``argv`` is ``None``): a missing
    ``--projector_path`` is an argparse error (usage and exit status 2), other bad flags a ``ValueError``."""
    parser = build_lmd_parser()
    args = parser.parse_args(argv)
    if not args.projector_path and not args.pretrained_model_name_or_path:
        parser.error(MISSING_PROJECTOR)
    check_lmd_args(args)
    return args
