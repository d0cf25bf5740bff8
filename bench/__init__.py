"""Benchmarks of the xos matcher.

``bench.orders`` builds seeded workloads (modelled on exchange-core's test
orders generator); ``python -m bench.matcher`` times them through
``Engine.process`` and checks the outcome against the reference model.
"""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | None, result: dict) -> None:
    """Write a benchmark's result to ``path`` (its ``--json`` option), if one was given."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
