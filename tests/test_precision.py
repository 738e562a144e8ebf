"""Precision per device and model: CUDA fp16, the CPU only what was measured faster, overrides win."""
from __future__ import annotations

import pytest
import torch

from bloodlib import models
from bloodlib.models.precision import CPU_SPEEDUPS, Precision, choose_precision


def test_cpu_speedups_name_registry_models():
    assert set(CPU_SPEEDUPS) <= set(models.list_models())


@pytest.mark.parametrize("name", ["efficientnet_b0", "alexnet", "not-measured"])
def test_cpu_gets_channels_last_where_measured_and_never_unmeasured_bf16(name):
    precision = choose_precision(name, torch.device("cpu"))
    assert precision.channels_last == CPU_SPEEDUPS.get(name, {}).get("channels_last", False)
    assert precision.autocast is None  # bf16 was slower (efficientnet_b0) or not measured


def test_overrides_win_on_every_device():
    cpu = choose_precision("alexnet", torch.device("cpu"), channels_last=True, cpu_bf16=True)
    assert cpu == Precision(torch.bfloat16, True) and cpu.name == "bf16"
    assert choose_precision("resnet18", torch.device("cpu"), channels_last=False, cpu_bf16=False).name == "fp32"
    assert choose_precision("alexnet", torch.device("cuda")) == Precision(torch.float16, True)
    assert choose_precision("alexnet", torch.device("cuda"), channels_last=False) == Precision(torch.float16, False)
    assert choose_precision("resnet18", torch.device("mps")) == Precision(None, False)
    # what a search pins: fp32 on CUDA as on the CPU (no autocast; the training context turns TF32 off)
    assert choose_precision("resnet18", torch.device("cuda"), cuda_autocast=False) == Precision(None, True)
