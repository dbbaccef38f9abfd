"""The catalog describes every served model once, truly: its files exist, its options are valid, its canary is
a request the model accepts, and no other module keeps a list of served models of its own."""

from __future__ import annotations

import ast

import pytest

from digitlab import catalog, serving
from digitlab.options import OptionsError, parse_options
from tests.unit.test_project import PACKAGES, ROOT, project_modules


@pytest.mark.parametrize("served", catalog.MODELS, ids=lambda m: m.name)
def test_each_entry_names_files_that_exist_and_options_that_parse(served):
    for path in (served.weights, served.config, served.handler, *served.files()):
        assert (ROOT / path).is_file(), path
    assert served.kind in serving.SERVICES


@pytest.mark.parametrize("served", catalog.MODELS, ids=lambda m: m.name)
def test_each_canary_is_a_request_the_shipped_model_accepts(served):
    service = serving.load(served.kind, ROOT / served.weights, served.handler_options())
    request = service.parse(served.canary_json)
    assert not getattr(request, "stream", False)  # a canary is answered whole, over any transport
    assert ("stream" in type(request).model_fields) == served.streams


def test_a_bad_option_is_refused_with_its_name_and_file():
    with pytest.raises(OptionsError) as err:
        parse_options("sample", {"max_sampels": 3}, "model_config/sample.yaml")
    message = str(err.value)
    assert message.startswith("model_config/sample.yaml: handler.max_sampels: unknown option")
    assert "max_samples" in message  # and says what the model takes
    with pytest.raises(OptionsError, match="handler.digit_min_confidence"):
        parse_options("interpolate", {"digit_min_confidence": "high"}, "model_config/interpolate.yaml")


def test_the_digit_search_defaults_exist_once():
    """digitlab.options holds the only defaults of the digit search: no function of the core has its own."""
    offenders = []
    for module, path in project_modules().items():
        if not module.startswith(("digitlab", "handlers")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                positional = node.args.args[len(node.args.args) - len(node.args.defaults) :]
                with_defaults = [a.arg for a in positional] + [
                    a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None
                ]
                offenders += [f"{module}.{node.name}({a}=...)" for a in with_defaults if a in SEARCH_OPTIONS]
    assert not offenders, offenders


SEARCH_OPTIONS = {"budget", "min_confidence", "digit_search_budget", "digit_min_confidence"}


# The catalog itself, and the tables keyed by model kind (the options schemas, the contract's path writers):
# kinds "palindrome", "sample" and "interpolate" are spelt like three of the models, but name services.
KIND_TABLES = {"digitlab.catalog", "digitlab.options", "tools.openapi"}


def test_no_module_keeps_its_own_list_of_served_models():
    """A literal that lists the served models (three or more of them, or `palindrome_rnn`, which is no kind's name)
    lives in the catalog alone: the archive builder, supervisor, SDK, CLI, OpenAPI generator and renderers read
    it. A study that exercises two chosen models (the GAN's pair) is a choice, not a list of what is served."""
    names = set(catalog.NAMES)
    offenders = []
    for module, path in project_modules().items():
        if module in KIND_TABLES or module.split(".")[0] not in PACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}
                if len(named) >= 3 or "palindrome_rnn" in named:
                    offenders.append(f"{module}:{node.lineno} {sorted(named)}")
            elif isinstance(node, ast.Constant) and node.value == "palindrome_rnn":
                offenders.append(f"{module}:{node.lineno} 'palindrome_rnn'")
    assert not offenders, offenders


def test_a_bad_option_stops_the_archive_build_before_anything_is_packed(tmp_path):
    from tools import build_archives

    with pytest.raises(OptionsError, match=r"model_config/sample.yaml \(with overrides\): handler.digit_budget"):
        build_archives.build(
            "sample", catalog.model("sample"), store=tmp_path, overrides={"handler": {"digit_budget": 10}}
        )
    assert not list(tmp_path.iterdir())  # nothing packed
    with pytest.raises(SystemExit) as stopped:  # the command says which model and exits 2
        build_archives.main(["nope"])
    assert stopped.value.code == 2
