"""Shared fixtures: where the real recorded traces live (outside the project)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """``../shared/traces`` beside the repository; skip when a clone has none."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
    if not path.is_dir():
        pytest.skip(f"real traces not present at {path}")
    return path
