"""``python -m bloodlib predict IMAGE... --checkpoint best.pt``: the class and probabilities of each image."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bloodlib.config import select_device
from bloodlib.models.checkpoints import CheckpointError, load_model
from bloodlib.models.inference import predict_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the white-blood-cell class and the class probabilities of each image. "
                          "Images are converted to RGB and resized the way the checkpoint's training images "
                          "were. 'crop' checkpoints were trained on crops centred on the white cell; in a user's "
                          "image the cell is found by its purple stain, and an image without one is cut to "
                          "its centred square.")
    parser.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    parser.add_argument("--checkpoint", "-c", required=True, type=Path, help="best.pt written by training")
    parser.add_argument("--mode", choices=("full", "crop"),
                        help="how images are framed: the checkpoint's own mode (the default) is the only one "
                             "it can use; a different one is refused")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest available)")


def main(args: argparse.Namespace) -> int:
    """Classify ``args.images``; exit code 0, 1 if any image failed, 2 if the checkpoint is unusable."""
    try:
        model = load_model(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trained_mode = model.checkpoint_metadata.get("mode", "full")
    if args.mode and args.mode != trained_mode:
        print(f"error: {args.checkpoint} was trained on {trained_mode!r} images; --mode {args.mode} would feed "
              f"it something else", file=sys.stderr)
        return 2

    device = select_device(args.device)
    results = predict_files(args.images, model.to(device), mode=trained_mode, device=device)
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        elif not args.json:
            probabilities = "  ".join(f"{c}={p:.3f}" for c, p in result["probabilities"].items())
            print(f"{result['file']}: {result['class']}  ({probabilities})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results) else 0
