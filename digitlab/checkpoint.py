"""Self-describing checkpoints: `{"kind", "config", "state_dict", "meta"}`, never a pickled model.

Loaded with `weights_only=True`, so a checkpoint cannot run code; the network is rebuilt from its
config through `KINDS`, the one table of what can be saved.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from digitlab.networks import (
    ClassifierConfig,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    JudgeConfig,
    JudgeNet,
    MnistClassifier,
    PalindromeConfig,
    PalindromeNet,
)

KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "palindrome": (PalindromeConfig, PalindromeNet),
    "generator": (GeneratorConfig, Generator),
    "discriminator": (DiscriminatorConfig, Discriminator),
    "classifier": (ClassifierConfig, MnistClassifier),
    "judge": (JudgeConfig, JudgeNet),
}


def kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"no checkpoint kind for {type(model).__name__}; add it to KINDS")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write `model` with its config (and optional plain-data `meta`: metrics, step, seed) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"kind": kind_of(model), "config": asdict(model.config), "state_dict": state, "meta": meta or {}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint behind
    return path


def config_from_dict(kind: str, config: dict[str, Any]):
    config_cls = KINDS[kind][0]
    known = {f.name for f in fields(config_cls)}
    # JSON-ish round trips turn tuples into lists; frozen configs want tuples back.
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in known})


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") not in KINDS:
        raise ValueError(f"{path} is not a digitlab checkpoint (expected keys kind/config/state_dict)")
    return payload


def load_model(path: str | Path, device: torch.device | str = "cpu", expect: str | None = None) -> nn.Module:
    """Rebuild the network saved at `path`, load its weights, move it to `device` and set eval mode."""
    return load_model_and_meta(path, device, expect)[0]


def load_model_and_meta(
    path: str | Path, device: torch.device | str = "cpu", expect: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """`load_model`, plus the checkpoint's `meta` (trained range, metrics, ...)."""
    payload = read_checkpoint(path)
    if expect is not None and payload["kind"] != expect:
        raise ValueError(f"{path} holds a {payload['kind']!r} checkpoint, expected {expect!r}")
    config = config_from_dict(payload["kind"], payload["config"])
    model = KINDS[payload["kind"]][1](config)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload["meta"]
