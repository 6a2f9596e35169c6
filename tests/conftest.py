"""Shared fixtures: databases (SQLite and PostgreSQL) and the private cupsd."""

import tests.hypothesis_profiles  # noqa: F401  (loads the CI profile: >= 10,000 examples)

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_cups"]
