"""TorchServe handler for `interpolate`: frames between two latent points.

With `"stream": true` each frame is sent as soon as it is generated (gRPC StreamPredictions, or chunked
HTTP); without it, all frames come in one answer, which is what a unary gRPC `Predictions` call needs.
"""

from __future__ import annotations

from handlers.common import ServingHandler


class InterpolateHandler(ServingHandler):
    kind = "interpolate"
