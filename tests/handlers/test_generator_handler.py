"""The generator handlers (`sample` and `interpolate`) with tiny networks and TorchServe's real Context."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from digitlab.checkpoint import load_model, save_checkpoint
from digitlab.imaging import to_uint8
from digitlab.latent import latent_for, sample_latents
from digitlab.networks import ClassifierConfig, Generator, GeneratorConfig, MnistClassifier
from digitlab.options import OptionsError
from handlers.interpolate_handler import InterpolateHandler
from handlers.sample_handler import SampleHandler
from tests.handlers.context import REST_HEADERS, make_context, start_batch, statuses


def png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan")
    generator = Generator(GeneratorConfig(hidden=(16, 32)))
    generator.train()(torch.randn(64, 100))  # give BatchNorm running stats that are not the identity
    save_checkpoint(path / "generator.pt", generator.eval())
    save_checkpoint(path / "classifier.pt", MnistClassifier(ClassifierConfig(channels=(4, 8), feature_dim=16)))
    digits = Generator(GeneratorConfig(hidden=(16, 32), classes=10))
    digits.train()(torch.randn(64, 100), torch.arange(64) % 10)
    save_checkpoint(path / "digit_generator.pt", digits.eval())
    return path


HANDLERS = {"sample": SampleHandler, "interpolate": InterpolateHandler}


def make_handler(model_dir, endpoint, **options):
    context = make_context(
        model_dir, "generator.pt", batch_size=4, options={"max_samples": 8, "max_steps": 6, **options}
    )
    handler = HANDLERS[endpoint]()
    handler.initialize(context)
    return handler, context


def run(handler, context, bodies, headers=None):
    start_batch(context, len(bodies), headers)
    return handler.handle([{"body": b} for b in bodies], context), statuses(context, len(bodies))


def test_sample_batch_is_seeded_and_independent_of_its_batch(model_dir):
    handler, context = make_handler(model_dir, "sample")
    (a, b, c), codes = run(handler, context, [{"n": 3, "seed": 5}, {"n": 2, "seed": 5}, {"n": 1}])
    assert codes == [200, 200, 200]
    a, b, c = json.loads(a), json.loads(b), json.loads(c)
    assert [im["id"] for im in a["images"]] == [{"seed": 5, "index": i} for i in range(3)]
    for i in range(2):  # same id -> same image, whichever request and batch it came in
        assert np.array_equal(png(a["images"][i]["png"]), png(b["images"][i]["png"]))
    assert png(a["images"][0]["png"]).shape == (28, 28)
    assert 0 <= c["seed"] <= 2**31 - 1  # the server picked a seed and says which


def test_truncation_one_answers_as_without_it_and_below_one_pulls_latents_in(model_dir):
    handler, context = make_handler(model_dir, "sample")
    (off, one, pulled), codes = run(
        handler,
        context,
        [{"n": 3, "seed": 5}, {"n": 3, "seed": 5, "truncation": 1}, {"n": 3, "seed": 5, "truncation": 0.5}],
    )
    assert codes == [200, 200, 200]
    assert off == one  # byte for byte: the default is off
    pulled = json.loads(pulled)
    assert [im["id"] for im in pulled["images"]] == [{"seed": 5, "index": i} for i in range(3)]
    generator = load_model(model_dir / "generator.pt")
    expected = to_uint8(generator(sample_latents(5, 3, psi=0.5)))
    for k in range(3):
        assert np.array_equal(png(pulled["images"][k]["png"]), expected[k])


@pytest.mark.parametrize("psi", [0, -0.5, 1.5, True, "0.5", None])
def test_truncation_outside_its_range_is_a_400_naming_the_range(model_dir, psi):
    handler, context = make_handler(model_dir, "sample")
    (answer,), codes = run(handler, context, [{"n": 1, "truncation": psi}])
    assert codes == [400] and "truncation" in json.loads(answer)["message"]


def test_interpolation_truncates_drawn_endpoints_but_not_an_explicit_z(model_dir):
    handler, context = make_handler(model_dir, "interpolate")
    z = latent_for(9, 9).tolist()
    bodies = [
        {"start": {"seed": 1, "index": 0}, "end": {"z": z}, "steps": 2, "truncation": 0.5},
        {"start": {"seed": 1, "index": 0}, "end": {"z": z}, "steps": 2},
    ]
    (pulled, off), codes = run(handler, context, bodies)
    assert codes == [200, 200]
    pulled, off = json.loads(pulled)["frames"], json.loads(off)["frames"]
    generator = load_model(model_dir / "generator.pt")
    start = to_uint8(generator(latent_for(1, 0, 0.5).unsqueeze(0)))[0]
    assert np.array_equal(png(pulled[0]["png"]), start)
    assert pulled[-1]["png"] == off[-1]["png"]  # the explicit end is used as given
    assert pulled[0]["png"] != off[0]["png"]


def test_sample_grid_and_raw_formats(model_dir):
    handler, context = make_handler(model_dir, "sample")
    (grid, raw), codes = run(
        handler, context, [{"n": 4, "seed": 1, "format": "grid"}, {"n": 1, "seed": 1, "format": "raw"}]
    )
    assert codes == [200, 200] and context.get_response_content_type(0) == "image/png"
    assert Image.open(io.BytesIO(grid)).size == (2 + 4 * 30, 2 + 30)  # 4 tiles of 28 + 2 px padding, one row
    pixels = np.array(json.loads(raw)["images"][0]["pixels"])
    assert pixels.shape == (28, 28) and pixels.min() >= 0 and pixels.max() <= 255


def test_accept_image_png_asks_for_a_grid(model_dir):
    handler, context = make_handler(model_dir, "sample")
    (answer,), _ = run(handler, context, [{"n": 2, "seed": 1}], headers=[{**REST_HEADERS, "accept": "image/png"}])
    assert answer.startswith(b"\x89PNG") and context.get_response_content_type(0) == "image/png"


def test_sample_limits_come_from_the_model_config(model_dir):
    handler, context = make_handler(model_dir, "sample")
    (answer,), codes = run(handler, context, [{"n": 9}])
    assert codes == [400] and "at most 8 samples" in json.loads(answer)["message"]


def test_sample_with_a_digit_serves_the_first_ids_the_classifier_reads_as_it(model_dir):
    generator = load_model(model_dir / "generator.pt")
    classifier = load_model(model_dir / "classifier.pt")
    with torch.no_grad():
        probs = classifier(generator(sample_latents(4, 64))).softmax(dim=1)[:, 7]  # (64,)
    top = probs.sort(descending=True).values
    threshold = float(top[4] + top[5]) / 2  # exactly 5 of the 64 ids are confident enough
    handler, context = make_handler(
        model_dir, "sample", classifier="classifier.pt", digit_search_budget=64, digit_min_confidence=threshold
    )
    (found, plain, too_many), codes = run(
        handler,
        context,
        [{"n": 3, "seed": 4, "digit": 7, "format": "raw"}, {"n": 2, "seed": 4}, {"n": 6, "seed": 4, "digit": 7}],
    )
    assert codes == [200, 200, 422]
    images = json.loads(found)["images"]
    expected = (probs >= threshold).nonzero().flatten().tolist()[:3]
    assert [im["id"] for im in images] == [{"seed": 4, "index": i} for i in expected]
    with torch.no_grad():  # each image is the sample of its id
        want = to_uint8(generator(torch.stack([latent_for(4, i) for i in expected]))).astype(int)  # (3, 28, 28)
    assert np.abs(np.array([im["pixels"] for im in images]) - want).max() <= 1
    assert [im["id"]["index"] for im in json.loads(plain)["images"]] == [0, 1]  # plain requests are unchanged
    assert json.loads(too_many)["message"].startswith("fewer than 6 of the 64 latents of seed 4 are read as a 7")


def test_sample_with_a_digit_needs_the_classifier(model_dir):
    handler, context = make_handler(model_dir, "sample", classifier=None)  # no classifier in the model config
    (answer,), codes = run(handler, context, [{"n": 1, "digit": 3}])
    assert codes == [400] and "does not draw digits on request" in json.loads(answer)["message"]


def test_interpolation_endpoints_are_the_endpoint_samples(model_dir):
    handler, context = make_handler(model_dir, "interpolate")
    sampler, sample_context = make_handler(model_dir, "sample")
    (frames,), codes = run(
        handler,
        context,
        [{"start": {"seed": 3, "index": 0}, "end": {"seed": 3, "index": 1}, "steps": 5, "method": "lerp"}],
    )
    (samples,), _ = run(sampler, sample_context, [{"n": 2, "seed": 3}])
    frames, samples = json.loads(frames)["frames"], json.loads(samples)["images"]
    assert codes == [200] and [f["index"] for f in frames] == list(range(5)) and frames[0]["of"] == 5
    assert np.array_equal(png(frames[0]["png"]), png(samples[0]["png"]))
    assert np.array_equal(png(frames[-1]["png"]), png(samples[1]["png"]))
    assert all(0 <= f["digit"] <= 9 and 0 < f["confidence"] <= 1 for f in frames)


def test_explicit_latents_and_gif(model_dir):
    handler, context = make_handler(model_dir, "interpolate")
    z = latent_for(1, 1).tolist()
    (gif,), codes = run(
        handler, context, [{"start": {"z": z}, "end": {"seed": 2, "index": 0}, "steps": 4, "format": "gif"}]
    )
    assert codes == [200] and context.get_response_content_type(0) == "image/gif"
    assert Image.open(io.BytesIO(gif)).n_frames == 4


def test_digit_points_use_the_bounded_search(model_dir):
    finds_anything, context = make_handler(model_dir, "interpolate", digit_min_confidence=0.0)
    (answer,), codes = run(
        finds_anything, context, [{"start": {"digit": 4}, "end": {"digit": 7, "seed": 1}, "steps": 2}]
    )
    assert codes == [200] and len(json.loads(answer)["frames"]) == 2
    finds_nothing, context = make_handler(model_dir, "interpolate", digit_min_confidence=0.999, digit_search_budget=8)
    (answer,), codes = run(finds_nothing, context, [{"start": {"digit": 4}, "end": {"seed": 0, "index": 0}}])
    assert codes == [422]
    assert "no latent within 8 tries of seed 0 is read as a 4" in json.loads(answer)["message"]


def test_streamed_and_whole_requests_in_one_batch(model_dir, monkeypatch):
    sent = []  # what the handler hands TorchServe before the batch is done
    monkeypatch.setattr(
        "handlers.common.send_intermediate_predict_response",
        lambda ret, ids, msg, code, ctx: sent.append((dict(ids), dict(ret))),
    )
    handler, context = make_handler(model_dir, "interpolate")
    path = {"start": {"seed": 1, "index": 0}, "end": {"seed": 1, "index": 1}, "steps": 3}
    answers, codes = run(handler, context, [{**path, "stream": True}, path, {**path, "steps": 99}])
    assert codes == [200, 200, 400]
    assert [ids for ids, _ in sent] == [{0: "req-0"}, {0: "req-0"}]  # frames 0 and 1 go out as they are made
    streamed = [json.loads(ret[0]) for _, ret in sent] + [json.loads(answers[0])]  # the last frame is the answer
    whole = json.loads(answers[1])["frames"]
    assert [f["index"] for f in streamed] == [0, 1, 2]
    assert [f["png"] for f in streamed] == [f["png"] for f in whole]  # same frames either way


def test_describe_says_what_each_generator_model_can_do(model_dir):
    sampler, _ = make_handler(model_dir, "sample", classifier=None)
    card = json.loads(sampler.describe_handle())
    assert card["kind"] == "sample" and card["limits"]["max_samples"] == 8
    assert card["generator"]["config"] == {"latent_dim": 100, "hidden": [16, 32], "classes": 0}
    assert "classifier" not in card and "digits" not in card  # no digits on request
    interpolator, _ = make_handler(model_dir, "interpolate", digit_search_budget=64)
    card = json.loads(interpolator.describe_handle())
    assert card["kind"] == "interpolate" and card["limits"]["max_steps"] == 6
    assert card["digits"] == {"drawn_by": "search", "budget": 64, "min_confidence": 0.99}
    assert card["classifier"]["config"]["channels"] == [4, 8]


DIGITS = {"digit_generator": "digit_generator.pt", "digit_min_confidence": 0.0}  # the tiny classifier accepts all


def test_a_digit_is_drawn_by_the_digit_generator_and_its_ids_name_it(model_dir):
    handler, context = make_handler(model_dir, "sample", **DIGITS)
    (answer, plain), codes = run(handler, context, [{"n": 3, "seed": 4, "digit": 7}, {"n": 3, "seed": 4}])
    assert codes == [200, 200]
    images = json.loads(answer)["images"]
    assert [im["id"] for im in images] == [{"seed": 4, "index": i, "digit": 7} for i in range(3)]
    assert [im["id"] for im in json.loads(plain)["images"]] == [{"seed": 4, "index": i} for i in range(3)]
    digits = load_model(model_dir / "digit_generator.pt")
    expected = to_uint8(digits(sample_latents(4, 3), torch.full((3,), 7)))
    for k in range(3):
        assert np.array_equal(png(images[k]["png"]), expected[k])


def test_an_id_with_its_digit_draws_the_same_image_again(model_dir):
    sampler, context = make_handler(model_dir, "sample", **DIGITS)
    (answer,), _ = run(sampler, context, [{"n": 2, "seed": 9, "digit": 3}])
    second = json.loads(answer)["images"][1]
    interpolator, context = make_handler(model_dir, "interpolate", **DIGITS)
    path = {"start": second["id"], "end": {"digit": 5, "seed": 2}, "steps": 4}
    (answer,), codes = run(interpolator, context, [path])
    assert codes == [200]
    frames = json.loads(answer)["frames"]
    assert np.array_equal(png(frames[0]["png"]), png(second["png"]))  # the id names the image it was sent with
    digits = load_model(model_dir / "digit_generator.pt")
    end = to_uint8(digits(latent_for(2, 0).unsqueeze(0), torch.tensor([5])))[0]
    assert np.array_equal(png(frames[-1]["png"]), end)  # the first id of seed 2 that reads as a 5


def test_a_path_between_digits_blends_the_digit_generators_class_input(model_dir):
    handler, context = make_handler(model_dir, "interpolate", **DIGITS)
    (answer,), codes = run(
        handler, context, [{"start": {"digit": 1}, "end": {"digit": 8}, "steps": 3, "method": "lerp"}]
    )
    assert codes == [200]
    middle = png(json.loads(answer)["frames"][1]["png"])
    digits = load_model(model_dir / "digit_generator.pt")
    z = (latent_for(0, 0) + latent_for(0, 0)) / 2  # both ends are id (0, 0) of seed 0: lerp keeps it
    halfway = torch.zeros(1, 10)
    halfway[0, 1] = halfway[0, 8] = 0.5
    assert np.array_equal(middle, to_uint8(digits(z.unsqueeze(0), halfway))[0])


def test_an_id_with_a_digit_joins_only_another_digit_point(model_dir):
    handler, context = make_handler(model_dir, "interpolate", **DIGITS)
    mixed = {"start": {"seed": 1, "index": 0, "digit": 3}, "end": {"seed": 1, "index": 1}}
    (answer,), codes = run(handler, context, [mixed])
    assert codes == [400] and "only with another digit point" in json.loads(answer)["message"]
    without, context = make_handler(model_dir, "interpolate")  # no digit generator configured
    (answer,), codes = run(without, context, [mixed])
    assert codes == [400] and "no digit generator" in json.loads(answer)["message"]


def test_a_digit_point_beside_a_plain_id_is_found_among_the_reports_samples(model_dir):
    handler, context = make_handler(model_dir, "interpolate", **DIGITS)
    (answer,), codes = run(handler, context, [{"start": {"digit": 4}, "end": {"seed": 0, "index": 1}, "steps": 2}])
    assert codes == [200]
    generator = load_model(model_dir / "generator.pt")
    first = to_uint8(generator(latent_for(0, 0).unsqueeze(0)))[0]  # min confidence 0: the first id of seed 0
    assert np.array_equal(png(json.loads(answer)["frames"][0]["png"]), first)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"digit_serach_budget": 9}, "handler.digit_serach_budget: unknown option"),
        ({"threads": "2"}, "handler.threads"),
    ],
)
def test_a_misspelt_or_ill_typed_option_fails_the_load_and_names_it(model_dir, options, named):
    with pytest.raises(OptionsError, match=named) as err:
        make_handler(model_dir, "sample", **options)
    assert "the model config of 'test'" in str(err.value)  # the test context's model is not in the catalog
