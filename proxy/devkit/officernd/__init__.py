"""The OfficeRnD simulator: REST API, seeded records, faults (dev and tests only)."""
