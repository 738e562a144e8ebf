"""Numeric precision and memory format for one model on one device, and deterministic training.

Hardware tuning is not part of a model's description (timm keeps it out of its registry too): which models
the CPU trains faster in bf16 or channels_last lives here, in :data:`CPU_SPEEDUPS`, not in
:mod:`bloodlib.models`.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch

# Per registry name, whether the CPU trains it faster with channels_last and with bf16 autocast than in fp32
# NCHW (a model not listed gets neither). Measured on 2 AMD EPYC (Zen 4, native bf16) cores, batch 32,
# training steps at 48 and 80 px, against fp32 NCHW: resnet18 bf16 + channels_last +32 % / +70 %, resnet50
# +38 % / +80 % (channels_last alone about 0 / +10 %); efficientnet_b0 channels_last +32 % / +73 %, bf16 -40 %;
# alexnet within +-5 % for both.
CPU_SPEEDUPS: dict[str, dict[str, bool]] = {
    "resnet18": {"channels_last": True, "bf16": True},
    "resnet50": {"channels_last": True, "bf16": True},
    "efficientnet_b0": {"channels_last": True, "bf16": False},
    "alexnet": {"channels_last": False, "bf16": False},
}


@dataclasses.dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32) and memory format chosen for one device and model."""
    autocast: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]


def choose_precision(model_name: str, device: torch.device, *, channels_last: bool | None = None,
                     cpu_bf16: bool | None = None, cuda_autocast: bool = True) -> Precision:
    """CUDA: fp16 autocast (fp32 without ``cuda_autocast``) and channels_last. CPU: bf16 and channels_last only
    where measured faster for this model (:data:`CPU_SPEEDUPS`) and, for bf16, only on CPUs with native bf16.
    MPS: fp32.

    ``channels_last`` and ``cpu_bf16`` (TrainConfig's fields of those names) override the choice when not None.
    """
    if device.type == "cuda":
        return Precision(torch.float16 if cuda_autocast else None, True if channels_last is None else channels_last)
    if device.type != "cpu":
        return Precision(None, bool(channels_last))
    measured = CPU_SPEEDUPS.get(model_name, {})
    native_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    bf16 = measured.get("bf16", False) and native_bf16 if cpu_bf16 is None else cpu_bf16
    if channels_last is None:
        channels_last = measured.get("channels_last", False)
    return Precision(torch.bfloat16 if bf16 else None, channels_last)


def autocast_for(device: torch.device, precision: Precision):
    """torch.autocast for the chosen precision, or nothing for fp32."""
    if precision.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast)


@contextlib.contextmanager
def deterministic():
    """Deterministic algorithms while training (warn, not fail, where an op has none), and no TF32 on CUDA (fp32
    means fp32: cuDNN's convolutions would otherwise round to TF32), then as before."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[2], saved[3]
        torch.backends.cuda.matmul.allow_tf32 = saved[4]
