"""Choosing where tensors live: training asks for "auto"; TorchServe assigns a GPU id per worker."""

from __future__ import annotations

import torch


def pick_device(spec: str = "auto") -> torch.device:
    """ "auto" -> CUDA when present, else Apple MPS, else CPU; anything else is taken literally."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def serving_device(gpu_id: int | str | None) -> torch.device:
    """The device TorchServe assigned a worker: `context.system_properties["gpu_id"]` is None on CPU hosts."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")
