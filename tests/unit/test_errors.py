"""One error type, one error body: what handlers send, the door says and the SDK recognises."""

import json

from digitlab.errors import InternalError, InvalidRequest, ServiceError, error_body, error_json, is_handler_error


def test_every_error_is_one_body_in_one_order():
    assert InvalidRequest("no").to_json() == {"code": 400, "type": "InvalidRequest", "message": "no"}
    assert list(InvalidRequest("few", status=422).to_json()) == ["code", "type", "message"]
    failed = InternalError("req-7")
    assert isinstance(failed, ServiceError) and failed.status == 500 and "req-7" in failed.message
    assert json.loads(error_json(429, "TooManyRequests", "slow down")) == error_body(
        429, "TooManyRequests", "slow down"
    )


def test_the_sdk_knows_a_handlers_error_and_nothing_else():
    assert is_handler_error(InvalidRequest("no").to_json()) and is_handler_error(InternalError("x").to_json())
    assert not is_handler_error(error_body(401, "Unauthorized", "key"))  # the door's: an HTTP status says it
    assert not is_handler_error({"code": 400, "type": "InvalidRequest", "message": "m", "digit": 3})
    assert not is_handler_error({"digit": 3, "probabilities": [0.1] * 10})
