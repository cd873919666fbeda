"""pymilvus stays quiet when the adapter is imported after logging is configured (a lazily imported subcommand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

LAZY = "import logging; from core.logs import configure_logging; configure_logging('WARNING'); import core.milvus_errors; print(logging.getLogger('pymilvus').level)"


def test_importing_the_adapter_after_configure_logging_keeps_pymilvus_at_critical() -> None:
    # A fresh interpreter: pymilvus's first import configures its logger (dictConfig at WARNING), undoing configure_logging's CRITICAL.
    ran = subprocess.run([sys.executable, "-c", LAZY], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert ran.stdout.strip() == "50", ran.stdout + ran.stderr
