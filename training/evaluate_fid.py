#!/usr/bin/env python
"""FID and KID between two sets of images: folders, datasets saved to disk, or datasets on the Hub.

    python training/evaluate_fid.py --real path/to/real_images --generated path/to/samples \\
        --feature_network inception --feature_network_path weights-inception-2015-12-05-6726825d.pth
    python training/evaluate_fid.py --real cifar10 --real_split test --generated samples/ --feature_network dinov2

Only ``inception`` (torchmetrics with torch-fidelity) gives numbers comparable with published FID; ``dinov2``,
``clip``, ``fashion-mnist-classifier`` or a folder of any transformers vision model give a Fréchet distance in
that network's features, comparable only with numbers on the same network (docs/pipeline.md, "FID for your own
data"). Prints FID, KID (mean ± std), the number of images and the network; ``--output`` writes them as JSON.
"""

from __future__ import annotations

import json
import os

from diffusers_lmd.metrics import evaluate_image_sets, load_feature_network
from diffusers_lmd.training.args import image_set_config, parse_evaluate_fid_args


def main(argv=None) -> dict:
    args = parse_evaluate_fid_args(argv, description=__doc__)
    config = image_set_config(args)
    network = load_feature_network(args.feature_network, args.feature_network_path, device=args.device)
    scores = evaluate_image_sets(config, network)
    print(scores.report())
    result = {**scores.to_dict(), "real": args.real, "generated": args.generated}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
