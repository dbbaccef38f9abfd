"""The engine tuned by measurement: batching and workers, frontend settings, the GAN models' paths."""
