"""`make bench-peers`: the shipped TorchServe against its no-op ceiling, the door, LitServe, Ray Serve."""
