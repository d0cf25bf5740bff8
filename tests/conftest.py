"""Shared fixtures: every engine test runs against the Cython engine and the reference model."""
from __future__ import annotations

import pytest

from engine.reference import ReferenceEngine

IMPLEMENTATIONS = {"reference": ReferenceEngine}
try:  # the compiled engine; a build failure must fail the suite, not skip it
    from engine.matcher import Engine
except ImportError as exc:  # pragma: no cover
    raise ImportError("engine.matcher is not built: run `pip install -e .[test]`") from exc
IMPLEMENTATIONS["cython"] = Engine


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def engine_cls(request):
    """The engine class under test: ``cython`` and ``reference``."""
    return IMPLEMENTATIONS[request.param]
