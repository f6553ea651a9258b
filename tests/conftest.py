"""Shared test setup: make ``tests/recordings.py`` importable in every import mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import recordings  # noqa: E402


@pytest.fixture(scope="session")
def all_recordings() -> tuple[recordings.Recording, ...]:
    """Every conformance recording in tests/data, loaded once."""
    return recordings.recordings()
