#!/usr/bin/env python
"""Train an LMD model (Latent Masking Diffusion, arXiv 2312.07971) on a frozen projector's latents.

    accelerate launch training/train_lmd.py --projector_path path/to/vqmodel --train_data_dir path/to/images \\
        --resolution 256 --preset base --train_batch_size 64 --max_train_steps 100000 --output_dir lmd-model

--projector_path also takes a Hub repository (stabilityai/sd-vae-ft-mse) or a pipeline, whose vae/ is used. Without
--dataset_name or --train_data_dir it trains on the built-in demo photos. All flags: --help; docs/training.md explains
them, the latent cache, resuming, multi-GPU runs and pushing to the Hub ("Running on GPUs").
"""

from diffusers_lmd.training import parse_lmd_args, train_lmd


def main() -> None:
    result = train_lmd(parse_lmd_args())
    if result.eval is not None:
        print(
            f"held-out PSNR: {result.eval.psnr:.2f} dB after {result.global_step} steps; saved to {result.output_dir}"
        )


if __name__ == "__main__":
    main()
