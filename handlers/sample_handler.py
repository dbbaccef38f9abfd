"""TorchServe handler for `sample`: random digits from the GAN generator (a grid PNG for `Accept: image/png`)."""

from __future__ import annotations

from handlers.common import ServingHandler


class SampleHandler(ServingHandler):
    kind = "sample"
