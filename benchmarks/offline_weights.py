"""How long ``create_model(pretrained="auto")`` takes when no ImageNet weights are cached.

With empty weight caches (a temporary Hugging Face cache and torch.hub folder) each model looks in the
cache, probes its weights host (at most ``models.PROBE_TIMEOUT`` s plus half a second) and, offline, falls
back to random initialisation. Prints per model the seconds taken, where the weights came from and whether
the host answered: offline, the fallback should cost a few seconds, never a hung download. Online, the
weights are really downloaded (into the temporary folders, deleted afterwards) and the time is the download's.

    python benchmarks/offline_weights.py --models resnet18 alexnet
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import huggingface_hub.constants
import pandas as pd
import torch

from bloodlib import models
from bloodlib.models import factory


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=models.list_models())
    args = parser.parse_args(argv)
    rows = []
    saved = huggingface_hub.constants.HF_HUB_CACHE, torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as folder:
        huggingface_hub.constants.HF_HUB_CACHE = str(Path(folder) / "hf")
        torch.hub.set_dir(str(Path(folder) / "torch"))
        try:
            for name in args.models:
                host_answers = factory._host_answers(models.get_spec(name).weights_host)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the "training from scratch" warning is expected here
                    model = models.create_model(name, 4, pretrained="auto")
                rows.append(dict(model=name, seconds=round(time.perf_counter() - start, 2),
                                 source=model.pretrained_source, host_answers=host_answers))
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
        finally:
            huggingface_hub.constants.HF_HUB_CACHE = saved[0]
            torch.hub.set_dir(saved[1])
    print(f"probe timeout {models.PROBE_TIMEOUT} s")
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
