"""The REST contract, docs/api/openapi.json: up to date with the pydantic models, and true of the docs.

Every curl example in README.md and docs/ (its JSON body) and every answer shown under one is validated
against the document, so neither the docs nor the contract can drift from the models unnoticed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tools import openapi

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The pages that show curl examples: the front page, the API manual, the deployment guide.
EXAMPLE_PAGES = (README, ROOT / "docs" / "API.md", ROOT / "docs" / "DEPLOY.md")


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(openapi.OUT.read_text())


def test_the_document_is_up_to_date():
    assert openapi.OUT.read_text() == openapi.render(), "docs/api/openapi.json is out of date: run `make api`"


def test_every_served_route_and_the_health_endpoints_are_described(doc):
    assert doc["openapi"].startswith("3.1")
    models = {"palindrome", "palindrome_rnn", "sample", "interpolate"}
    assert {f"/predictions/{m}" for m in models} | {"/ready", "/live", "/health"} == set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    interpolate = doc["paths"]["/predictions/interpolate"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "application/x-ndjson", "image/gif"} == set(interpolate)
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def validator(doc: dict, schema: dict) -> Draft202012Validator:
    """A validator for `schema` whose "#/components/..." references resolve in the document."""
    return Draft202012Validator({**schema, "components": doc["components"]})


@dataclass
class Example:
    line: int  # in its page, 1-based
    model: str
    body: dict
    answer: list[str]  # the answer's text lines shown under the command; empty when it writes a file (-o)


CONTINUED_BY = ("{", '"', "[")  # an answer's lines start so (after indentation); anything else ends it


def curl_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples, i = [], 0
    while i < len(lines):
        if re.search(r"\bcurl\b.*\s-", lines[i]) and not lines[i].lstrip().startswith(("#", "`")):
            start, command = i, lines[i]
            while command.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i].strip()
            body, model = re.search(r"-d '([^']*)'", command), re.search(r"/predictions/(\w+)", command)
            if body and model:
                answer = []
                while i + 1 < len(lines) and lines[i + 1].strip().startswith(CONTINUED_BY) and " -o " not in command:
                    i += 1
                    answer.append(lines[i].strip())
                examples.append(Example(start + 1, model.group(1), json.loads(body.group(1)), answer))
        i += 1
    return examples


def parse_answer(lines: list[str]) -> list:
    """One JSON value per line (a stream), or one value over all the lines."""
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError:
        return [json.loads(" ".join(lines))]


def test_curl_examples_and_their_answers_match_the_document(doc):
    examples = [(page, ex) for page in EXAMPLE_PAGES for ex in curl_examples(page.read_text())]
    assert len(examples) >= 8 and sum(bool(e.answer) for _, e in examples) >= 5, "the docs' curl examples moved?"
    assert any(page == README for page, _ in examples), "the front page shows a curl example per endpoint"
    for page, ex in examples:
        where = f"{page.relative_to(ROOT)}:{ex.line}"
        post = doc["paths"][f"/predictions/{ex.model}"]["post"]
        request = post["requestBody"]["content"]["application/json"]["schema"]
        errors = sorted(e.message for e in validator(doc, request).iter_errors(ex.body))
        assert not errors, f"{where}: request {ex.body}: {errors}"
        if not ex.answer:
            continue
        media = "application/x-ndjson" if ex.body.get("stream") else "application/json"
        schema = post["responses"]["200"]["content"][media]["schema"]
        answers = parse_answer(ex.answer)
        assert len(answers) == (ex.body.get("steps") if ex.body.get("stream") else 1), where
        for answer in answers:
            errors = sorted(e.message for e in validator(doc, schema).iter_errors(answer))
            assert not errors, f"{where}: answer {answer}: {errors}"


def test_readme_error_bodies_match_the_document(doc):
    bodies = [
        json.loads(line.strip())
        for line in README.read_text().splitlines()
        if line.strip().startswith('{"code"') and line.strip().endswith("}")
    ]
    assert bodies, "no error body shown in the README"
    schema = doc["paths"]["/predictions/palindrome"]["post"]["responses"]["400"]["content"]["application/json"]
    for body in bodies:
        assert not list(validator(doc, schema["schema"]).iter_errors(body)), body


def test_the_models_refuse_what_the_document_refuses(doc):
    """Spot checks that the document is no looser than the models on the fields users get wrong most."""
    request = doc["components"]["schemas"]["PalindromeRequest"]
    check = validator(doc, request)
    assert check.is_valid({"digits": [1, 2, 3, 2]}) and check.is_valid({"digits": "1232"})
    assert not check.is_valid({"digits": [1, 12]}) and not check.is_valid({"digits": "12a"})
    assert not check.is_valid({"digits": [1, 2, 1], "extra": 1})
    interpolate = validator(doc, doc["components"]["schemas"]["InterpolateRequest"])
    assert interpolate.is_valid({"start": {"digit": 9}, "end": {"seed": 1, "index": 2}, "steps": 4})
    assert not interpolate.is_valid({"start": {"digit": 10}, "end": {"digit": 3}})
