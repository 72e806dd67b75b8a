"""Shared fixtures: where the real recorded traces live (outside the project).

Under CI (``CI`` set) hypothesis runs derandomized, so a CI run explores the
same examples every time and cannot fail on a new random draw; locally it
keeps exploring.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """``../shared/traces`` beside the repository; skip when a clone has none."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
    if not path.is_dir():
        pytest.skip(f"real traces not present at {path}")
    return path
