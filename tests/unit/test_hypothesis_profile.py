"""The suite's Hypothesis profile is in force (no per-example deadline; derandomized in CI)."""

from __future__ import annotations

import os

from hypothesis import settings


def test_profile_loaded() -> None:
    assert settings().deadline is None
    assert settings().derandomize == (os.environ.get("CI") == "true")
