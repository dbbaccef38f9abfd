"""Encoding generator output as uint8 arrays, PNG, grids, strips and GIFs."""

import io

import numpy as np
import torch
from PIL import Image

from digitlab.imaging import gif_bytes, grid, grid_png, png_bytes, strip_png, to_uint8, write_bytes


def test_to_uint8_maps_the_tanh_range_to_bytes():
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(4, 1, 1, 1)
    assert to_uint8(images).ravel().tolist() == [0, 128, 255, 255]  # clamped outside [-1, 1]
    assert to_uint8(torch.zeros(3, 1, 28, 28)).shape == (3, 28, 28)


def test_png_round_trips():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    decoded = np.array(Image.open(io.BytesIO(png_bytes(image))))
    assert np.array_equal(decoded, image)


def test_grid_lays_out_rows_with_black_padding():
    images = torch.ones(16, 1, 28, 28)
    mosaic = grid(images, nrow=8)
    assert mosaic.shape == (2 * 30 + 2, 8 * 30 + 2)  # 2 px padding around every image
    assert mosaic[0, 0] == 0 and mosaic[2, 2] == 255
    assert Image.open(io.BytesIO(grid_png(images, nrow=8))).size == (242, 62)


def test_strip_is_one_row():
    assert Image.open(io.BytesIO(strip_png(torch.zeros(5, 1, 28, 28)))).size == (5 * 30 + 2, 32)


def test_gif_has_every_frame(tmp_path):
    frames = np.stack([np.full((28, 28), v, dtype=np.uint8) for v in (0, 120, 255)])
    gif = Image.open(write_bytes(tmp_path / "a" / "x.gif", gif_bytes(frames, duration_ms=50, upscale=2)))
    assert gif.n_frames == 3 and gif.size == (56, 56)
