"""Helpers of the benchmark scripts that read the real data (the measurements themselves are run by hand,
never timed in tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_the_precision_comparison_reuses_a_run_that_left_the_precision_to_the_cpu(tmp_path, monkeypatch):
    """The seed spread's resnet18 runs (precision left to the CPU, trained in bf16) are the bf16 half of the
    bf16/fp32 comparison: ``spread.py --precisions bf16 fp32`` trains only what is missing, and its table holds
    one run per seed and precision (a pinned run before an unpinned one of the same training)."""
    import json

    import pandas as pd
    import spread

    def name(seed, *pin):
        return quality.name_of(quality.parser().parse_args(["--model", "resnet18", "--seed", str(seed), *pin]))

    def run(seed, precision, name, score):
        return {"name": name, "model": "resnet18", "seed": seed, "torch_threads": 2, "precision": precision,
                "pooled_macro_f1": score, "fold_mean_macro_f1": score, "pooled_accuracy": score, "seconds": 1.0,
                "train_config": {"seed": seed}}

    log = tmp_path / "spread.jsonl"
    runs = [run(42, "bf16", name(42), 0.88), run(42, "fp32", name(42, "--precision", "fp32"), 0.87),
            run(43, "bf16", name(43), 0.86), run(43, "bf16", name(43, "--precision", "bf16"), 0.85),
            run(43, "fp32", name(43, "--precision", "fp32"), 0.84),
            run(44, "fp32", name(44), 0.83)]  # unpinned, in fp32 (a CPU without bf16): an fp32 run, no bf16 one
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    trained = []
    monkeypatch.setattr(spread.subprocess, "run", lambda words, **_: trained.append(words))
    table = spread.main(["--models", "resnet18", "--seeds", "42", "43", "44", "--threads", "2",
                         "--precisions", "bf16", "fp32", "--log", str(log), "--table", str(tmp_path / "p.csv")])
    asked = [(w[w.index("--seed") + 1], w[w.index("--precision") + 1]) for w in trained]
    assert asked == [("44", "bf16")]
    scores = table.set_index(["seed", "precision"])["fold_mean_macro_f1"].to_dict()
    assert scores == pytest.approx({(42, "bf16"): 0.88, (42, "fp32"): 0.87, (43, "bf16"): 0.85, (43, "fp32"): 0.84,
                                    (44, "fp32"): 0.83})
    assert pd.read_csv(tmp_path / "p.csv")["seed"].tolist() == [42, 42, 43, 43, 44]
