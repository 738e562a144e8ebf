"""``python -m bloodlib evaluate --checkpoint best.pt --dataset NAME``: a checkpoint scored on another labelled
dataset, printed as text or JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bloodlib import config, evaluation
from bloodlib.evaluation.significance import format_p
from bloodlib.evaluation.crossdataset import ADAPTATIONS, SHOWN, evaluate_checkpoint, summary
from bloodlib.models.checkpoints import CheckpointError
from bloodlib.pipeline.published_models import CHECKPOINT_HELP, resolve


def format_text(report: dict) -> str:
    """The summary as lines for a terminal."""
    left = report["left_out"]
    part = f"test part of {report['split']}" if report["split"] else "all images"
    lines = [f"checkpoint: {report['checkpoint']} ({report['model']}, trained on {report['trained_on'] or 'unknown'}, "
             f"{report['mode']} {report['image_size'][0]}x{report['image_size'][1]})",
             f"dataset: {report['dataset']} ({part}): {report['n_images']} images scored of {report['n_selected']}",
             _cleaning_line(report.get("cleaning") or {}),
             f"shared classes: {', '.join(report['shared_classes'])}",
             f"left out, dataset classes the model lacks: "
             + (", ".join(f"{c} ({k} images)" for c, k in left["dataset_classes"].items()) or "none")
             + f"; {left['images']} images in all",
             f"left out, model classes the dataset lacks: {', '.join(left['model_classes']) or 'none'}"]
    if report["adapt"]:
        lines.append(f"adaptation: {' then '.join(report['adapt'])}"
                     + (f"; stain reference {report['reference']}" if report["reference"] else "")
                     + (f"; BatchNorm statistics of all {report['n_selected']} images" if "adabn" in report["adapt"]
                        else ""))
    lines += [f"  {note}" for note in report["notes"]]

    def block(scores: dict, title: str) -> list[str]:
        rows = [title] + [f"  {evaluation.METRIC_LABELS[m]:<18} {_number(scores[m]['value'])}  95% CI "
                          f"[{_number(scores[m]['low'])}, {_number(scores[m]['high'])}]" for m in SHOWN]
        rows.append("  recall per class: " + ", ".join(f"{c} {_number(v['recall'])} (n={v['support']})"
                                                        for c, v in scores["per_class"].items()))
        return rows

    if "before" in report:
        lines += block(report["before"], "before adaptation:")
        lines += block(report, f"after {' + '.join(report['adapt'])}:")
        change = report["change"]
        lines.append("  change: " + ", ".join(f"{evaluation.METRIC_LABELS[m]} {change[m]:+.3f}" for m in SHOWN)
                     + f"; {change['n01']} images newly right, {change['n10']} newly wrong, "
                       f"p={format_p(change['p_value'])} ({change['method']})")
    else:
        lines += block(report, "scores:")
    lines.append(f"intervals: {report['ci_method']}")
    return "\n".join(lines)


def _cleaning_line(cleaning: dict) -> str:
    if not cleaning:
        return "cleaning: not recorded"
    dropped = cleaning["dropped"]
    return (f"cleaning: {cleaning['listed']} listed; "
            + ("; ".join(f"{step}: {n}" for step, n in dropped.items()) if dropped else "nothing dropped"))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Score a trained checkpoint on another labelled dataset: the images of the classes "
                          "both share, prepared at the checkpoint's size and mode; accuracy, balanced accuracy "
                          "and macro-F1 with 95% bootstrap intervals, recall per class. What is left out on "
                          "each side is said.")
    parser.add_argument("--checkpoint", "-c", required=True, help=CHECKPOINT_HELP)
    parser.add_argument("--dataset", required=True,
                        help="the notebooks' dataset parameter: bccd, pbc, deepapl, kaggle-augmented, folder:/path, "
                             "csv:/path/list.csv (see the README)")
    parser.add_argument("--data-dir", type=Path, help="where the dataset is (default: as the notebooks find it)")
    parser.add_argument("--split", help="score only the test part of this split of the dataset "
                                        "(e.g. 'holdout', 'fold 1/4, repeat 1'); default: every image")
    parser.add_argument("--adapt", action="append", choices=ADAPTATIONS, default=[],
                        help="narrow the gap at test time (repeatable), scored before and after: adabn "
                             "(BatchNorm statistics of the target images), reinhard or macenko (stain "
                             "normalisation towards the source dataset)")
    parser.add_argument("--reference", help="the source dataset for stain normalisation (default: the one the "
                                            "checkpoint was trained on)")
    parser.add_argument("--reference-data-dir", type=Path, help="where the reference dataset is")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=42, help="the dataset's cleaning and splits (default 42)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest available)")


def main(args: argparse.Namespace) -> int:
    """Print the scores; exit code 0, 1 when the dataset cannot be scored, 2 when the checkpoint is unusable."""
    try:
        checkpoint = resolve(args.checkpoint)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        settings = config.resolve(None, args.data_dir, None, dataset=args.dataset, seed=args.seed)
        reference = None
        if args.reference:
            reference = config.resolve(None, args.reference_data_dir, None, dataset=args.reference, seed=args.seed)
        ev, details = evaluate_checkpoint(checkpoint, settings, adapt=args.adapt, split=args.split,
                                          reference=reference, device=args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = summary(ev, details, n=args.bootstrap, seed=args.seed)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_text(report))
    return 0
