"""The served models, each described once: what it is called, what serves it, from which files, how it is probed.

Everything that lists served models reads this table: the archive builder (tools/build_archives.py), the
supervisor's canaries and warm-ups (ops/), the SDK and the `digitlab` command (clients/), the OpenAPI
generator (tools/openapi.py) and the door's routes as the deploy renderers write them (deploy/). Limits are
never typed here: the palindrome lengths come from the checkpoint (its `meta`), the generator's from the
model config's typed options (digitlab.options), and `digitlab.serving` reads both the way a worker does.

Adding a model: one `ServedModel` below; a new kind also needs its service in digitlab/serving.py, its options
in digitlab/options.py and a three-line handler (docs/ARCHITECTURE.md walks through it). Standard library
only: the serving image's supervisor runs without site-packages, and the client SDK installs no YAML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digitlab.options import HandlerOptions

ROOT = Path(__file__).resolve().parent.parent  # the checkout (the paths below are relative to it)
WEIGHTS = "weights"  # where checkpoints, and the files options name, live in the checkout


@dataclass(frozen=True)
class ServedModel:
    """One served model: `POST /predictions/<name>` (and gRPC `model_name`)."""

    name: str
    kind: str  # the serving layer's service (digitlab.serving.SERVICES), its handler and its options schema
    weights: str  # its checkpoint, relative to the checkout
    config: str  # its model config, relative to the checkout: TorchServe's workers, batching, queue; `handler:` options
    summary: str  # one line, as the API contract and the CLI's help show it
    canary_json: str  # the smallest valid request, as JSON text: the supervisor's canary and warm-up
    streams: bool = False  # takes `"stream": true`: one message per frame over gRPC StreamPredictions

    @property
    def handler(self) -> str:
        return f"handlers/{self.kind}_handler.py"

    @property
    def canary(self) -> dict[str, Any]:
        return json.loads(self.canary_json)

    def model_config(self, root: Path = ROOT) -> dict[str, Any]:
        """The shipped model config as TorchServe reads it."""
        import yaml  # the build steps' and the runtime's: the client SDK, which imports this module, has no YAML

        return yaml.safe_load((root / self.config).read_text()) or {}

    def handler_options(self, root: Path = ROOT) -> HandlerOptions:
        """The typed `handler:` options of the shipped model config; OptionsError names a bad one and the file."""
        from digitlab.options import parse_options  # pydantic: the build steps' and the workers', not the supervisor's

        return parse_options(self.kind, self.model_config(root).get("handler"), self.config)

    def files(self, root: Path = ROOT) -> tuple[str, ...]:
        """What the archive holds beside the checkpoint: the files its options name, from weights/."""
        return tuple(f"{WEIGHTS}/{name}" for name in self.handler_options(root).files())


PALINDROME_CANARY = '{"digits": [1, 2, 2]}'

MODELS: tuple[ServedModel, ...] = (
    ServedModel(
        "palindrome",
        "palindrome",
        "weights/palindrome_lstm.pt",
        "model_config/palindrome.yaml",
        "The missing last digit of a palindrome (LSTM)",
        PALINDROME_CANARY,
    ),
    ServedModel(
        "palindrome_rnn",
        "palindrome",
        "weights/palindrome_rnn.pt",
        "model_config/palindrome.yaml",
        "The missing last digit of a palindrome (RNN)",
        PALINDROME_CANARY,
    ),
    ServedModel(
        "sample",
        "sample",
        "weights/generator.pt",
        "model_config/sample.yaml",
        "Random digits from the GAN, or digits asked for",
        '{"n": 1, "seed": 0}',
    ),
    ServedModel(
        "interpolate",
        "interpolate",
        "weights/generator.pt",
        "model_config/interpolate.yaml",
        "Frames between two latents or two digits",
        '{"start": {"seed": 0, "index": 0}, "end": {"seed": 0, "index": 1}, "steps": 2}',
        streams=True,
    ),
)

BY_NAME: dict[str, ServedModel] = {m.name: m for m in MODELS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
STREAMING: frozenset[str] = frozenset(m.name for m in MODELS if m.streams)


def model(name: str) -> ServedModel:
    """The served model called `name`; KeyError lists the names there are."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no served model {name!r}; the models are {', '.join(NAMES)}") from None
