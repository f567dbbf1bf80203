"""Shared fixtures. Telemetry off for every test process (the same defaults as the CLI)."""

import pipelines.env  # noqa: F401
