"""The shipped models as the serving layer loads them from this checkout (weights/, model_config/*.yaml).

What a TorchServe worker loads from the archive, without building one: the in-process target, the
FastAPI baseline and the tuning run call the very services the handlers call.
"""

from __future__ import annotations

import torch

from digitlab import catalog, serving
from tools.build_archives import ROOT


def service(name: str, device: torch.device | str = "cpu") -> serving.Service:
    """The service of archive `name` (palindrome, palindrome_rnn, sample, interpolate)."""
    spec = catalog.model(name)
    return serving.load(spec.kind, ROOT / spec.weights, spec.model_config()["handler"], device)
