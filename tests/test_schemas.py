"""Request validation: every bad input becomes an InvalidRequest that says what is wrong and what is allowed."""

import json

import pytest

from digitlab.schemas import PALINDROME_MAX_LENGTH_CEILING, InvalidRequest, PalindromeRequest, parse_request

LIMITS = {"min_length": 3, "max_length": 15}


def parse(body):
    return parse_request(PalindromeRequest, body, LIMITS)


@pytest.mark.parametrize(
    "body",
    [{"digits": [1, 2, 3, 2]}, {"digits": "1232"}, json.dumps({"digits": [1, 2, 3, 2]}).encode(), bytearray(b'{"digits": "1232"}')],
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
