"""The search page's entry point: ``python -m web.server`` (``t2i up`` starts it on 127.0.0.1:8080)."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from core.logs import configure_logging
from core.settings import WebSettings, add_flags, from_flags, split_address
from web.app import create_app


def main(argv: list[str] | None = None) -> int:
    """Parse flags (they override ``T2I_WEB_*``) and serve the page until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="web", description="text2image-search: the search page over the gateway")
    add_flags(parser, WebSettings)
    parser.add_argument("--log-level", default="INFO", help="log level of the project's loggers")
    args = parser.parse_args(argv)
    settings = from_flags(WebSettings, args)
    configure_logging(args.log_level, structured=True)
    host, port = split_address(settings.listen)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
