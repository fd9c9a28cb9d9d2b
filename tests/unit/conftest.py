"""The unit tests: pure functions, parsers, configuration and documents. No process
is started, no server is needed, and nothing here imports the harness: a failure
here is reported in seconds, before ``make test`` starts any process."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
