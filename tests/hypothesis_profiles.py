"""Hypothesis settings profiles: "ci" (CI=true) and "dev".

Imported by conftest.py and at the top of every property-test module, so the
profile is loaded before any @given test is defined. HYPOTHESIS_PROFILE
overrides the choice (e.g. HYPOTHESIS_PROFILE=ci locally).

The money properties (pro rata) run 10,000 examples in CI (``MONEY_PROPERTY``);
the other property tests run 1,000 there, which keeps the suite well inside
its time budget.
"""

from __future__ import annotations

import os

from hypothesis import settings

# derandomize: CI runs the same examples every time (a red run is reproducible, never luck).
settings.register_profile("ci", max_examples=1_000, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=300)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
settings.load_profile(PROFILE)

MONEY_PROPERTY = settings(max_examples=10_000 if PROFILE == "ci" else 500, deadline=None)
