"""Logging setup shared by every entry point: JSON lines for services, plain text for the CLI."""

from __future__ import annotations

import json
import logging
import sys
import time

# The distribution's top-level packages (pyproject.toml [tool.setuptools] packages; tests/unit/test_packaging.py holds them equal).
PROJECT_LOGGERS = ("core", "inference", "devstack", "search", "gateway", "reindex", "export", "relevance", "t2i", "web", "text2image")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", structured: bool = False) -> None:
    """Project loggers at ``level``; third-party loggers at WARNING; output on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if structured else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    quiet_pymilvus()


def quiet_pymilvus() -> None:
    """Keep only pymilvus's critical lines.

    pymilvus logs every failed RPC with a traceback through its own handler; the adapter turns those
    failures into domain errors with clear messages. pymilvus configures its logger when it is first
    imported (``dictConfig``), which undoes an earlier setting, so the adapter calls this again right
    after importing it (``core.milvus_errors``): a command that imports the adapter lazily, after
    ``configure_logging``, stays quiet too.
    """
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
