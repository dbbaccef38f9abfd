"""End to end: `sample` and `interpolate` on a real TorchServe, over REST, chunked HTTP and gRPC."""

import base64
import io
import json
import time

import numpy as np
import pytest
import requests
from PIL import Image

from clients.__main__ import main as cli
from clients.errors import ServerError

pytestmark = pytest.mark.server
TIMEOUT = 30


def png(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.size == (28, 28)
    return np.asarray(image)


def test_same_seed_same_images_over_rest_and_grpc(rest_client, grpc_client):
    a = rest_client.predict("sample", {"n": 4, "seed": 11})
    b = grpc_client.predict("sample", {"n": 6, "seed": 11})
    assert a["seed"] == b["seed"] == 11
    for x, y in zip(a["images"], b["images"][:4]):
        assert x["id"] == y["id"] and np.array_equal(png(x["png"]), png(y["png"]))
    other = rest_client.predict("sample", {"n": 4, "seed": 12})
    assert not np.array_equal(png(a["images"][0]["png"]), png(other["images"][0]["png"]))


def test_grid_can_be_saved_straight_to_a_file(server):
    resp = requests.post(
        f"{server.endpoints.inference}/predictions/sample",
        json={"n": 16, "seed": 1},
        headers={"Authorization": f"Bearer {server.key()}", "Accept": "image/png"},
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).size == (2 + 8 * 30, 2 + 2 * 30)


def test_interpolation_starts_and_ends_at_the_endpoint_samples(rest_client):
    samples = rest_client.predict("sample", {"n": 2, "seed": 21})["images"]
    for method in ("slerp", "lerp"):
        frames = rest_client.predict(
            "interpolate", {"start": samples[0]["id"], "end": samples[1]["id"], "steps": 10, "method": method}
        )["frames"]
        assert [f["index"] for f in frames] == list(range(10))
        assert np.array_equal(png(frames[0]["png"]), png(samples[0]["png"]))
        assert np.array_equal(png(frames[-1]["png"]), png(samples[1]["png"]))


def test_digit_points_are_read_as_the_digits_asked_for(rest_client):
    for start, end in ((9, 3), (0, 7)):
        frames = rest_client.predict("interpolate", {"start": {"digit": start}, "end": {"digit": end}, "steps": 6})[
            "frames"
        ]
        assert (frames[0]["digit"], frames[-1]["digit"]) == (start, end)
        assert frames[0]["confidence"] >= 0.9 and frames[-1]["confidence"] >= 0.9


@pytest.mark.parametrize("digit", [2, 8])
def test_sample_with_a_digit_over_rest_and_grpc(rest_client, grpc_client, digit):
    a = rest_client.predict("sample", {"n": 16, "seed": 5, "digit": digit})
    b = grpc_client.predict("sample", {"n": 16, "seed": 5, "digit": digit})
    assert a == b and a["seed"] == 5 and len(a["images"]) == 16  # deterministic by seed, either transport
    indices = [im["id"]["index"] for im in a["images"]]
    assert indices == sorted(set(indices))  # the first matching ids of the seed, in order
    for image in a["images"][:4]:  # each id's sample is read as the digit: ask the interpolation labeller
        frames = rest_client.predict("interpolate", {"start": image["id"], "end": image["id"], "steps": 2})["frames"]
        assert np.array_equal(png(frames[0]["png"]), png(image["png"]))
        assert frames[0]["digit"] == digit and frames[0]["confidence"] >= 0.99  # accepted at p >= 0.99


def test_grpc_stream_delivers_the_first_frame_before_the_last_is_generated(server, grpc_client):
    arrivals, frames = [], []
    payload = {"start": {"seed": 5, "index": 0}, "end": {"seed": 5, "index": 1}, "steps": 64}
    for frame in grpc_client.stream("interpolate", payload):
        arrivals.append(time.time())
        frames.append(frame)
    assert [f["index"] for f in frames] == list(range(64))
    # Same machine, same clock: frame 0 was in the client's hands before the server rendered frame 63.
    assert arrivals[0] < frames[-1]["generated_at"]


def test_http_stream_sends_frames_as_chunks_in_order(rest_client):
    payload = {"start": {"digit": 1}, "end": {"digit": 8}, "steps": 12}
    frames = list(rest_client.stream("interpolate", payload))  # the client adds "stream": true for interpolate
    assert [f["index"] for f in frames] == list(range(12))
    whole = rest_client.predict("interpolate", payload)["frames"]
    assert [f["png"] for f in frames] == [f["png"] for f in whole]


def test_unary_grpc_on_the_interpolation_model_works_and_the_worker_lives(server, grpc_client):
    pids = server.worker_pids("interpolate")
    answer = grpc_client.predict("interpolate", {"start": {"digit": 2}, "end": {"digit": 5}, "steps": 8})
    assert len(answer["frames"]) == 8
    gif = grpc_client.predict_bytes(
        "interpolate", {"start": {"digit": 2}, "end": {"digit": 5}, "steps": 8, "format": "gif"}
    )
    assert Image.open(io.BytesIO(gif)).n_frames == 8
    assert server.worker_pids("interpolate") == pids


BAD = [
    ("sample", b"not json"),
    ("sample", b'{"n": 1000}'),
    ("sample", b'{"n": -1}'),
    ("sample", b'{"seed": "abc"}'),
    ("sample", b'{"format": "bmp"}'),
    ("sample", b'{"digit": 10}'),
    ("sample", b'{"digit": "7"}'),
    ("sample", b'{"truncation": 0}'),
    ("sample", b'{"truncation": 1.5}'),
    ("sample", b'{"truncation": NaN}'),
    ("interpolate", b'{"start": {"z": [NaN]}, "end": {"digit": 3}}'),
    ("interpolate", json.dumps({"start": {"z": [1e9] * 100}, "end": {"digit": 3}}).encode()),
    ("interpolate", b'{"start": {"digit": 3}, "end": {"digit": 4}, "method": "spline"}'),
    ("interpolate", b'{"start": {"digit": 3}, "end": {"digit": 4}, "steps": 100000}'),
    ("interpolate", b'{"start": {"digit": 3}}'),
    ("interpolate", b'{"start": {"digit": 3}, "end": {"digit": 4}, "truncation": "0.7"}'),
    ("interpolate", b'{"start": {"digit": 3}, "end": {"digit": 4}, "stream": true, "format": "gif"}'),
]


@pytest.mark.parametrize(("model", "body"), BAD)
def test_bad_input_is_a_4xx_and_the_worker_lives(server, model, body):
    pids = server.worker_pids(model)
    resp = requests.post(
        f"{server.endpoints.inference}/predictions/{model}",
        data=body,
        headers={"Authorization": f"Bearer {server.key()}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert 400 <= resp.status_code < 500 and resp.json()["message"], resp.text
    assert server.worker_pids(model) == pids


def test_grpc_bad_input_in_a_stream_is_a_client_error(grpc_client):
    with pytest.raises(ServerError) as err:
        list(grpc_client.stream("interpolate", {"start": {"digit": 3}, "end": {"digit": 4}, "steps": 1}))
    assert err.value.status == 400 and "steps" in err.value.message
    assert (
        len(grpc_client.predict("interpolate", {"start": {"digit": 3}, "end": {"digit": 4}, "steps": 3})["frames"]) == 3
    )


def test_cli_sample_and_interpolate(server, tmp_path, capsys):
    conn = ["--url", server.endpoints.inference, "--target", server.endpoints.grpc_inference, "--token", server.key()]
    assert cli(["sample", "--n", "8", "--seed", "3", "-o", str(tmp_path / "grid.png"), *conn]) == 0
    assert Image.open(tmp_path / "grid.png").size == (2 + 8 * 30, 2 + 30)
    gif = tmp_path / "nine_to_three.gif"
    assert (
        cli(
            [
                "interpolate",
                "--from",
                "digit:9",
                "--to",
                "digit:3",
                "--steps",
                "6",
                "--grpc",
                "--quiet",
                "-o",
                str(gif),
                *conn,
            ]
        )
        == 0
    )
    assert Image.open(gif).n_frames == 6
    out = capsys.readouterr().out
    assert "digits read along the path: 9" in out and out.rstrip().endswith(f"wrote 6 frames to {gif}")
    assert cli(["sample", "--n", "3", "--seed", "2", "--digit", "6", "--grpc", *conn]) == 0
    assert capsys.readouterr().out.startswith("3 samples read as 6 from seed 2 (ids 2:")
    assert cli(["sample", "--n", "999", *conn]) == 1
    assert "at most 64 samples" in capsys.readouterr().err


def test_truncation_over_rest_grpc_and_the_cli(rest_client, grpc_client, server, tmp_path, capsys):
    """The same psi and id give the same image over every transport; psi below 1 changes it, 1 does not."""
    pulled = rest_client.sample(3, seed=5, truncation=0.7)
    assert [im.png for im in grpc_client.sample(3, seed=5, truncation=0.7).images] == [im.png for im in pulled.images]
    assert [im.png for im in rest_client.sample(3, seed=5, truncation=1).images] == [
        im.png for im in rest_client.sample(3, seed=5).images
    ]
    assert [im.png for im in pulled.images] != [im.png for im in rest_client.sample(3, seed=5).images]
    conn = ["--url", server.endpoints.inference, "--token", server.key()]
    grid = tmp_path / "grid.png"
    assert cli(["sample", "--n", "3", "--seed", "5", "--truncation", "0.7", "-o", str(grid), *conn]) == 0
    assert grid.read_bytes() == rest_client.sample_grid(3, 5, truncation=0.7)
    frames = list(grpc_client.interpolate_stream({"seed": 5, "index": 0}, {"seed": 5, "index": 1}, 3, truncation=0.7))
    assert frames[0].png == pulled.images[0].png and frames[-1].png == pulled.images[1].png
    capsys.readouterr()
    assert cli(["sample", "--n", "1", "--truncation", "1.5", *conn]) == 1
    assert "truncation" in capsys.readouterr().err
