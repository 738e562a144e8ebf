"""``python -m bloodlib predict IMAGE... --checkpoint best.pt``: the class and probabilities of each image, and
whether the image looks familiar to the model (:mod:`bloodlib.models.familiarity`): a warning per image that does
not."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bloodlib.config import select_device
from bloodlib.models.checkpoints import CheckpointError, load_model
from bloodlib.models.inference import predict_files
from bloodlib.pipeline.published_models import CHECKPOINT_HELP, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Print the white-blood-cell class and the class probabilities of each image. "
                          "Images are converted to RGB and resized the way the checkpoint's training images "
                          "were. 'crop' checkpoints were trained on crops centred on the white cell; in a user's "
                          "image the cell is found by its purple stain, and an image without one is cut to "
                          "its centred square. Each image is also compared with the checkpoint's training images: "
                          "one whose stain is unlike theirs, or that leaves the model unsure, gets a warning (on "
                          "stderr): a model reads another lab's cells badly without showing it in its "
                          "probabilities.")
    parser.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    parser.add_argument("--checkpoint", "-c", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--mode", choices=("full", "crop"),
                        help="how images are framed: the checkpoint's own mode (the default) is the only one "
                             "it can use; a different one is refused")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest available)")
    parser.add_argument("--no-warnings", action="store_true",
                        help="print no familiarity warnings (the familiarity columns stay in the output)")


def main(args: argparse.Namespace) -> int:
    """Classify ``args.images``; exit code 0, 1 if any image failed, 2 if the checkpoint is unusable."""
    try:
        args.checkpoint = resolve(args.checkpoint)
        model = load_model(args.checkpoint)
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trained_mode = model.checkpoint_metadata.get("mode", "full")
    if args.mode and args.mode != trained_mode:
        print(f"error: {args.checkpoint} was trained on {trained_mode!r} images; --mode {args.mode} would feed "
              f"it something else", file=sys.stderr)
        return 2

    judged = "familiarity" in model.checkpoint_metadata
    if not judged and not args.no_warnings:
        print(f"note: {args.checkpoint} holds no familiarity reference (trained before bloodlib recorded one): "
              f"whether the images look like its training images cannot be judged", file=sys.stderr)

    device = select_device(args.device)
    results = predict_files(args.images, model.to(device), mode=trained_mode, device=device)
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
            continue
        if not args.json:
            probabilities = "  ".join(f"{c}={p:.3f}" for c, p in result["probabilities"].items())
            print(f"{result['file']}: {result['class']}  ({probabilities}){_familiarity(result) if judged else ''}")
        if judged and result["unfamiliar"] and not args.no_warnings:
            print(f"warning: {result['file']}: unfamiliar to the model: {result['reason']} (stain distance "
                  f"{result['stain_ratio']:.2f} x the limit, top probability {result['max_probability']:.3f}); "
                  f"its class may well be wrong", file=sys.stderr)
    unfamiliar = sum(bool(r.get("unfamiliar")) for r in results)
    if unfamiliar and not args.no_warnings:
        judged_images = sum("unfamiliar" in r for r in results)
        print(f"warning: {unfamiliar} of {judged_images} images look unfamiliar to the model", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any("error" in r for r in results) else 0


def _familiarity(result: dict) -> str:
    """The familiarity columns of a text line: the stain's distance over the limit, the top probability."""
    verdict = "UNFAMILIAR" if result["unfamiliar"] else "familiar"
    return f"  stain {result['stain_ratio']:.2f} x limit, top p {result['max_probability']:.3f}: {verdict}"
