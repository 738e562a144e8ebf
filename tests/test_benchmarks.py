"""Helpers of the benchmark scripts that read the real data (the measurements themselves are run by hand,
never timed in tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402  (scripts, not a package)
import throughput  # noqa: E402


def test_throughput_trains_on_the_first_split_the_notebooks_make(bccd_root, monkeypatch):
    """``--real`` broke when the BCCD crops moved to cross-validation (no "train" rows any more)."""
    monkeypatch.setenv("BLOODLIB_DATA", str(bccd_root))
    data, train, val = throughput.real(64, "crop")
    assert len(val) and len(train) > len(np.unique(train))  # the train part, oversampled as fit trains it
    assert not set(train) & set(val)
    assert data.image_size == (64, 64)


def test_a_pinned_precision_is_in_the_recipe_and_the_run_name():
    """bf16 and fp32 runs of one seed are two runs of the log (the bf16/fp32 comparison of benchmarks/spread.py);
    without --precision the name stays as before, so earlier logs still match."""
    names = {}
    for precision in (None, "fp32", "bf16"):
        args = quality.parser().parse_args(["--model", "resnet18", "--seed", "43"]
                                           + (["--precision", precision] if precision else []))
        settings = quality.settings_for(args)
        assert settings.train.cpu_bf16 == {None: None, "fp32": False, "bf16": True}[precision]
        names[precision] = quality.name_of(args)
    assert names["fp32"] == names[None] + "-fp32" and names["bf16"] == names[None] + "-bf16"


def test_a_tuned_recipe_names_its_runs_apart(monkeypatch):
    """Two recipes that differ only in a searched knob besides lr, weight decay and batch (dropout, drop-path, the
    optimizer) are two runs of the spread log, not one run found twice; the base recipe's names stay as before."""
    from bloodlib import config

    args = quality.parser().parse_args(["--model", "alexnet", "--seed", "42"])
    monkeypatch.setattr(config, "MODEL_RECIPES", {})
    before = quality.name_of(args)
    monkeypatch.setattr(config, "MODEL_RECIPES", {("bccd", "alexnet"): dict(drop_rate=0.35, optimizer="sgd")})
    after = quality.name_of(args)
    assert after.replace("-dr0.35-sgd", "") == before and after != before


def test_the_precision_table_in_the_benchmarks_readme_is_the_committed_one():
    """benchmarks/README.md's bf16/fp32 rows are copied from results/precision.csv: each seed's two scores and
    their difference (of the unrounded scores), to the printed digits."""
    import re

    import pandas as pd

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    runs = pd.read_csv(root / "results" / "precision.csv")
    scores = runs.pivot_table(index="seed", columns="precision", values="fold_mean_macro_f1")
    section = (root / "README.md").read_text().split("## bf16 against fp32", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \|", section, re.MULTILINE)
    assert [int(seed) for seed, *_ in rows] == sorted(scores.index)
    for seed, bf16, fp32, difference in rows:
        shown = scores.loc[int(seed)]
        assert (float(bf16), float(fp32)) == (round(shown["bf16"], 3), round(shown["fp32"], 3))
        assert float(difference) == round(shown["bf16"] - shown["fp32"], 3)
