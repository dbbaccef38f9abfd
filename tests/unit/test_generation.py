"""Rendering: an image is a function of its latent (and digit) alone, whatever batch it is drawn in."""

import torch

from digitlab.generation import MIN_ROWS, generate
from digitlab.latent import sample_latents
from digitlab.networks import Generator, GeneratorConfig


def test_an_image_does_not_depend_on_the_size_of_its_batch():
    """A forward of fewer than MIN_ROWS rows takes BLAS's small-matrix path, which rounds differently: padded,
    every batch size draws the same bits (one thread, as the workers run)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for config in (GeneratorConfig(), GeneratorConfig(classes=10)):
            generator = Generator(config).eval()
            generator.train()(sample_latents(9, 64), *(() if not config.classes else (torch.arange(64) % 10,)))
            generator.eval()
            z, digits = sample_latents(3, 40), (torch.arange(40) % 10 if config.classes else None)
            whole = generate(generator, z, digits)
            for size in (1, 2, 5, MIN_ROWS - 1, MIN_ROWS, 24):
                parts = [
                    generate(generator, z[k : k + size], None if digits is None else digits[k : k + size])
                    for k in range(0, len(z), size)
                ]
                assert torch.equal(torch.cat(parts), whole), (config, size)
    finally:
        torch.set_num_threads(threads)
