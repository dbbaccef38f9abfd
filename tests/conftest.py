"""Shared fixtures. The `server` fixture starts ONE real TorchServe for the whole session.

It runs on free ports, in its own working directory (keys, logs, TMPDIR), from a copy of the
project's config.properties, so it never meets a server the user started with `make serve`; it waits
for every worker READY and always stops what it started.
"""

from __future__ import annotations

import pytest

from ops import server as ops_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ops_server.RunningServer:
    if not ops_server.archives():
        pytest.fail("no archives in model_store/: run the suite with `make test`, which builds them")
    with ops_server.serving(tmp_path_factory.mktemp("torchserve")) as running:
        yield running
