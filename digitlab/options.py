"""Each served model kind's `handler:` options (its model config, model_config/*.yaml), typed, with one set of defaults.

TorchServe hands a worker its model config as a plain dict; `parse_options` turns the `handler:` section into
one of these or refuses it with a message that names the option and the file. The archive builder checks every
shipped model config the same way, so a misspelt or ill-typed option stops `make archives` before any worker
meets it. Torch-free: the catalog, the SDK and the build steps import it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitlab.constants import MAX_SAMPLES, MAX_STEPS


class OptionsError(ValueError):
    """A model config whose `handler:` section is not what its model kind takes."""


class HandlerOptions(BaseModel):
    """Options every model kind takes."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    threads: int = Field(1, ge=1, le=64, description="intra-op threads per worker: workers x threads <= cores")

    def files(self) -> tuple[str, ...]:
        """Files these options name, read next to the checkpoint (the archive packs them beside it)."""
        return ()


class PalindromeOptions(HandlerOptions):
    """`palindrome`, `palindrome_rnn`: the served lengths come from the checkpoint, not from here."""


class GeneratorOptions(HandlerOptions):
    """The GAN's two kinds: how a requested digit is drawn, and the classifier that reads digits."""

    classifier: str | None = Field(
        "classifier.pt",
        min_length=1,
        description="the MNIST classifier's checkpoint: accepts requested digits, labels frames; null: no digits",
    )
    digit_generator: str | None = Field(
        None,
        min_length=1,
        description="a class-conditional generator that draws a requested digit directly; null: digits are "
        "searched for among the report's generator's samples",
    )
    digit_search_budget: int = Field(
        4096, ge=1, le=65536, description="latent ids tried at most per requested digit: bounds one request's work"
    )
    digit_min_confidence: float = Field(
        0.99, ge=0, lt=1, description="a drawn digit is accepted when the classifier reads it with p >= this"
    )

    # Both generator kinds take both limits (the same service family validates both request kinds); each
    # shipped model config sets the one its endpoint uses.
    max_samples: int = Field(MAX_SAMPLES, ge=1, le=MAX_SAMPLES, description="images per sample request at most")
    max_steps: int = Field(MAX_STEPS, ge=2, le=MAX_STEPS, description="frames per interpolation at most")

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.classifier, self.digit_generator) if f)


OPTIONS: dict[str, type[HandlerOptions]] = {
    "palindrome": PalindromeOptions,
    "sample": GeneratorOptions,
    "interpolate": GeneratorOptions,
}


def parse_options(kind: str, handler: Any, source: str) -> HandlerOptions:
    """A model config's `handler:` section (dict or None) -> the typed options of model `kind`.

    Raises OptionsError naming `source` (the model config file) and each option that is unknown or ill-typed.
    """
    schema = OPTIONS[kind]
    try:
        return schema.model_validate(handler or {})
    except ValidationError as err:
        problems = "; ".join(
            f"handler.{'.'.join(map(str, e['loc'])) or '(section)'}: "
            + ("unknown option" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()
        )
        known = ", ".join(schema.model_fields)
        raise OptionsError(f"{source}: {problems} (the {kind} model takes: {known})") from None
