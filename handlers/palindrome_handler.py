"""TorchServe handler for `palindrome` and `palindrome_rnn`: the archive's checkpoint decides which."""

from __future__ import annotations

from digitlab.checkpoint import load_model_and_meta
from digitlab.palindrome import predict_probabilities
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
        probs = predict_probabilities(self.model, [r.digits for r in requests])  # (B, 10), one forward
        return [
            PalindromeResponse(
                digit=int(p.argmax()),
                probabilities=[round(float(x), 6) for x in p],
                length=len(r.digits),
                model=self.model.config.cell,
            )
            for r, p in zip(requests, probs)
        ]
