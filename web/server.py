"""The search page's entry point: ``python -m web.server`` (``t2i up`` starts it on 127.0.0.1:8080)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from core.logs import configure_logging
from core.settings import WebSettings
from web.app import create_app


def main(argv: list[str] | None = None) -> int:
    """Parse flags (they override ``T2I_WEB_*``) and serve the page until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="web", description="text2image-search: the search page over the gateway")
    for name, field in WebSettings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{field.description} (env T2I_WEB_{name.upper()})")
    parser.add_argument("--log-level", default="INFO", help="log level of the project's loggers")
    args = parser.parse_args(argv)
    settings = WebSettings(**{name: getattr(args, name) for name in WebSettings.model_fields if getattr(args, name) is not None})
    configure_logging(args.log_level, structured=True)
    host, _, port = settings.listen.rpartition(":")
    uvicorn.run(create_app(settings), host=host.strip("[]") or "127.0.0.1", port=int(port), log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
