"""TorchServe handler for `palindrome` and `palindrome_rnn`: the archive's checkpoint decides which."""

from __future__ import annotations

from handlers.common import ServingHandler


class PalindromeHandler(ServingHandler):
    kind = "palindrome"
