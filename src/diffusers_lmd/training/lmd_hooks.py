"""Checkpoints that ``from_pretrained`` reads: the model of every ``checkpoint-N/`` is saved as ``transformer/``.

As diffusers' example scripts do with ``unet/``, Accelerate's save-state hook writes the ``LMDModel`` with
``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) and takes it out of the weights
Accelerate saves itself, so it is stored once; the load-state hook restores it from there. So
``LMDModel.from_pretrained("out/checkpoint-500/transformer")`` loads a checkpoint's model, and with ``--use_ema``
``checkpoint-500/ema`` its EMA. A checkpoint written before these hooks (``model.safetensors``) still resumes.
"""

from __future__ import annotations

import os

from accelerate import Accelerator

from ..models import LMDModel

TRANSFORMER_SUBFOLDER = "transformer"


def register_transformer_hooks(accelerator: Accelerator, subfolder: str = TRANSFORMER_SUBFOLDER) -> None:
    """Register save/load state hooks that keep the prepared ``LMDModel`` in ``{checkpoint}/{subfolder}``."""

    def lmd_models(models: list) -> list[int]:
        return [i for i, model in enumerate(models) if isinstance(accelerator.unwrap_model(model), LMDModel)]

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        for i in reversed(lmd_models(models)):
            if accelerator.is_main_process:
                model = accelerator.unwrap_model(models[i])
                model.save_pretrained(os.path.join(output_dir, subfolder), safe_serialization=True)
            if weights:  # empty under DeepSpeed, which saves its own
                weights.pop(i)  # saved above: Accelerate must not write model.safetensors too

    def load_hook(models: list, input_dir: str) -> None:
        folder = os.path.join(input_dir, subfolder)
        if not os.path.isdir(folder):
            return  # an older checkpoint: Accelerate loads its model.safetensors itself
        for i in reversed(lmd_models(models)):
            model = accelerator.unwrap_model(models.pop(i))
            loaded = LMDModel.from_pretrained(folder, use_safetensors=True)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
