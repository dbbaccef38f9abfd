"""The models themselves: latency of the costliest requests, training speed."""
