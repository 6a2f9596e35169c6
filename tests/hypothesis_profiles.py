"""Hypothesis settings profiles: "ci" (CI=true) runs 10,000 examples, "dev" 500.

Imported by conftest.py and at the top of every property-test module, so the
profile is loaded before any @given test is defined. HYPOTHESIS_PROFILE
overrides the choice (e.g. HYPOTHESIS_PROFILE=ci locally).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=10_000, deadline=None)
settings.register_profile("dev", max_examples=500)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
settings.load_profile(PROFILE)
