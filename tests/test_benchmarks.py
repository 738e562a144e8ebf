"""Helpers of the benchmark scripts that read the real data (the measurements themselves are run by hand,
never timed in tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402  (a script, not a package)


def test_throughput_trains_on_the_first_split_the_notebooks_make(bccd_root, monkeypatch):
    """``--real`` broke when the BCCD crops moved to cross-validation (no "train" rows any more)."""
    monkeypatch.setenv("BLOODLIB_DATA", str(bccd_root))
    data, train, val = throughput.real(64, "crop")
    assert len(val) and len(train) > len(np.unique(train))  # the train part, oversampled as fit trains it
    assert not set(train) & set(val)
    assert data.image_size == (64, 64)
