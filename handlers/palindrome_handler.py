"""TorchServe handler for `palindrome` and `palindrome_rnn`: the archive's checkpoint decides which."""

from __future__ import annotations

from digitlab.answers import palindrome_answers
from digitlab.checkpoint import load_model_and_meta
from digitlab.schemas import PalindromeRequest, PalindromeResponse

from handlers.common import JsonHandler


class PalindromeHandler(JsonHandler):
    schema = PalindromeRequest

    def setup(self) -> None:
        self.model, meta = load_model_and_meta(self.serialized_file, self.device, expect="palindrome")
        # The lengths the model was trained (and measured) on are the lengths it serves.
        self.limits = {"min_length": meta["min_length"], "max_length": meta["max_length"]}

    def validation_context(self) -> dict[str, int]:
        return self.limits

    def predict(self, requests: list[PalindromeRequest]) -> list[PalindromeResponse]:
        return palindrome_answers(self.model, requests)  # one forward for the batch
