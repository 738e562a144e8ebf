"""Does a full report fit its time budget, with and without the backbones trained on another lab's data?

Reads a finished run (``report/runs/<id>`` or ``outputs/runs/<id>``): its record's wall time per notebook and,
for every model fine-tuned from a backbone of :mod:`bloodlib.study.backbones`, that backbone's training time
(``backbone.json`` beside its ``best.pt``). A run that found its backbones in the cache did not pay for them:
its first run would have; a run that trained them would not pay again. Both totals are printed against the
budgets (issue 13: a first run under 60 minutes on 2 CPU cores, under 35 with the backbones cached):

    python benchmarks/report_budget.py report/runs/20261201-120712-105547a
    python benchmarks/report_budget.py outputs/runs/<id> --first 60 --cached 35
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from bloodlib.study import backbones


def backbone_records(record: dict) -> dict[str, Path]:
    """The ``backbone.json`` of every backbone the run's models started from, by backbone key."""
    found = {}
    for model in (record.get("models") or {}).values():
        weights = model.get("initial_weights") or {}
        if weights.get("kind") == "checkpoint" and weights.get("backbone"):
            checkout = Path(__file__).resolve().parents[1]  # the record names it relative to the checkout
            path = (checkout / os.path.expandvars(os.path.expanduser(weights["path"]))).with_name(backbones.RECORD)
            if not path.is_file():
                sys.exit(f"{weights['path']}: no {backbones.RECORD} beside it (the backbone cache was cleared?)")
            found[weights["backbone"]] = path
    return found


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--first", type=float, default=60.0, help="budget of a first run, minutes")
    parser.add_argument("--cached", type=float, default=35.0, help="budget with the backbones cached, minutes")
    parser.add_argument("--backbones-trained-here", choices=("yes", "no"), default=None,
                        help="whether this run trained its backbones (default: those written after the "
                             "run started were)")
    args = parser.parse_args(argv)
    record = json.loads((args.run_dir / "run_record.json").read_text(encoding="utf-8"))
    notebooks = pd.DataFrame([{"notebook": nb["name"], "seconds": nb.get("seconds"), "status": nb["status"]}
                              for nb in record["notebooks"]])
    print(f"run {record['run_id']} ({record['profile']} profile, commit {record['git']['short']}, "
          f"{record['device']['name']}):")
    print(notebooks.to_string(index=False))
    total = float(notebooks["seconds"].fillna(0).sum())
    pretrained = backbone_records(record)
    backbone_total = sum(float(json.loads(path.read_text(encoding="utf-8"))["train_seconds"])
                         for path in pretrained.values())
    trained_here = args.backbones_trained_here
    if trained_here is None:  # a backbone written after the run started was trained by it
        started = pd.Timestamp(record["started"]).timestamp()
        trained_here = "yes" if pretrained and min(p.stat().st_mtime for p in pretrained.values()) > started else "no"
    first = total if trained_here == "yes" else total + backbone_total
    cached = total - backbone_total if trained_here == "yes" else total
    rows = pd.DataFrame([
        {"case": "first run (backbones trained)", "minutes": first / 60, "budget": args.first},
        {"case": "backbones cached", "minutes": cached / 60, "budget": args.cached}])
    rows["within budget"] = rows["minutes"] <= rows["budget"]
    print(f"\nbackbones: {len(pretrained)} ({backbone_total / 60:.1f} min of training; "
          f"{'trained in this run' if trained_here == 'yes' else 'read from the cache by this run'})")
    print(rows.round(1).to_string(index=False))
    return rows


if __name__ == "__main__":
    main()
