"""The job lifecycle: intake, dispatch, tracking, charging (the loops: workers.py)."""
