"""Request validation: every bad input becomes an InvalidRequest that says what is wrong and what is allowed."""

import json

import pytest

from digitlab.errors import InvalidRequest
from digitlab.schemas import PALINDROME_MAX_LENGTH_CEILING, PalindromeRequest, parse_request

LIMITS = {"min_length": 3, "max_length": 15}


def parse(body):
    return parse_request(PalindromeRequest, body, LIMITS)


@pytest.mark.parametrize(
    "body",
    [
        {"digits": [1, 2, 3, 2]},
        {"digits": "1232"},
        json.dumps({"digits": [1, 2, 3, 2]}).encode(),
        bytearray(b'{"digits": "1232"}'),
    ],
)
def test_valid_requests_in_every_accepted_form(body):
    assert parse(body).digits == [1, 2, 3, 2]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ([1, 2, 3], "must be a JSON object"),
        ({}, "digits: Field required"),
        ({"digits": []}, "got 0 digits; this model accepts 3 to 15"),
        ({"digits": [1, 2]}, "got 2 digits; this model accepts 3 to 15"),
        ({"digits": [1] * 16}, "got 16 digits; this model accepts 3 to 15"),
        ({"digits": [1, 2, 10, 2]}, "digits must be 0-9, got [10]"),
        ({"digits": [1, -2, 3, -2]}, "digits must be 0-9"),
        ({"digits": [1, 2, 3]}, "digits[1:] must read the same backwards"),
        ({"digits": "12a21"}, "only the characters 0-9"),
        ({"digits": "١٢٣"}, "only the characters 0-9"),  # Arabic-Indic digits are str.isdigit()
        ({"digits": [1.0, 2, 2]}, "every digit must be an integer"),
        ({"digits": [True, 2, 2]}, "every digit must be an integer"),
        ({"digits": ["1", "2", "2"]}, "every digit must be an integer"),
        ({"digits": None}, "valid list"),
        ({"digits": [1, 2, 2], "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"digits": [1] * (PALINDROME_MAX_LENGTH_CEILING + 1)}, f"at most {PALINDROME_MAX_LENGTH_CEILING} digits"),
    ],
)
def test_invalid_requests_are_refused_with_a_helpful_message(body, says):
    with pytest.raises(InvalidRequest) as err:
        parse(body)
    assert err.value.status == 400
    assert says in err.value.message
    assert json.loads(json.dumps(err.value.to_json()))["message"] == err.value.message


# --------------------------------------------------------------------------- generator requests

from digitlab.schemas import InterpolateRequest, SampleRequest  # noqa: E402

GEN_LIMITS = {"max_samples": 64, "max_steps": 32}
Z = [0.1] * 100


@pytest.mark.parametrize(
    ("schema", "body", "says"),
    [
        (SampleRequest, {"n": 65}, "at most 64 samples"),
        (SampleRequest, {"n": 0}, "greater than or equal to 1"),
        (SampleRequest, {"n": "3"}, "valid integer"),
        (SampleRequest, {"n": 1.5}, "valid integer"),
        (SampleRequest, {"seed": -1}, "greater than or equal to 0"),
        (SampleRequest, {"seed": 2**31}, "less than or equal to 2147483647"),
        (SampleRequest, {"format": "jpeg"}, "'png', 'grid' or 'raw'"),
        (SampleRequest, {"digit": 10}, "digit: Input should be less than or equal to 9"),
        (SampleRequest, {"digit": -1}, "digit: Input should be greater than or equal to 0"),
        (SampleRequest, {"digit": "3"}, "digit: Input should be a valid integer"),
        (SampleRequest, {"digit": True}, "digit: Input should be a valid integer"),
        (SampleRequest, {"digit": 3.0}, "digit: Input should be a valid integer"),
        (InterpolateRequest, {"start": {"digit": 1}, "end": {"digit": 3}, "steps": 33}, "at most 32 steps"),
        (InterpolateRequest, {"start": {"digit": 1}, "end": {"digit": 3}, "steps": 1}, "greater than or equal to 2"),
        (InterpolateRequest, {"start": {"digit": 1}, "end": {"digit": 3}, "method": "cubic"}, "'slerp' or 'lerp'"),
        (
            InterpolateRequest,
            {"start": {"digit": 10}, "end": {"digit": 3}},
            "start.digit: Input should be less than or equal to 9",
        ),
        (InterpolateRequest, {"start": {"z": Z[:99]}, "end": {"digit": 3}}, "at least 100 items"),
        (InterpolateRequest, {"start": {"z": [float("nan")] * 100}, "end": {"digit": 3}}, "finite number"),
        (InterpolateRequest, {"start": {"z": [float("inf")] + Z[1:]}, "end": {"digit": 3}}, "finite number"),
        (InterpolateRequest, {"start": {"z": [11.0] + Z[1:]}, "end": {"digit": 3}}, "within ±10"),
        (InterpolateRequest, {"start": {"seed": 1}, "end": {"digit": 3}}, "unknown point"),
        (InterpolateRequest, {"start": {"seed": 1, "index": 2, "z": Z}, "end": {"digit": 3}}, "Extra inputs"),
        (InterpolateRequest, {"start": 9, "end": {"digit": 3}}, "a point is an object"),
        (InterpolateRequest, {"end": {"digit": 3}}, "start: Field required"),
        (
            InterpolateRequest,
            {"start": {"digit": 1}, "end": {"digit": 3}, "format": "gif", "stream": True},
            "cannot be streamed",
        ),
    ],
)
def test_invalid_generator_requests(schema, body, says):
    with pytest.raises(InvalidRequest) as err:
        parse_request(schema, body, GEN_LIMITS)
    assert says in err.value.message


def test_nan_in_raw_json_is_refused_too():
    body = json.dumps({"start": {"z": [float("nan")] + Z[1:]}, "end": {"digit": 3}}).encode()  # Python writes NaN
    with pytest.raises(InvalidRequest, match="finite number"):
        parse_request(InterpolateRequest, body, GEN_LIMITS)


def test_valid_generator_requests_and_defaults():
    sample = parse_request(SampleRequest, {}, GEN_LIMITS)
    assert (sample.n, sample.seed, sample.format, sample.digit) == (1, None, "png", None)
    assert parse_request(SampleRequest, {"n": 16, "digit": 0}, GEN_LIMITS).digit == 0
    path = parse_request(InterpolateRequest, {"start": {"seed": 1, "index": 2}, "end": {"z": Z}}, GEN_LIMITS)
    assert (path.steps, path.method, path.format, path.stream) == (16, "slerp", "png", False)
    assert type(path.start).__name__ == "LatentId" and type(path.end).__name__ == "ExplicitLatent"
