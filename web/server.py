"""The search page's entry point: ``python -m web.server`` (``t2i up`` starts it on 127.0.0.1:8080).

The socket is bound here, before uvicorn starts, so that port 0 (any free port) works: the page
logs the address it got and reports it to its launcher (``core.listen``).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn

from core.errors import UserError
from core.listen import bound_address, report_bound
from core.logs import configure_logging
from core.settings import WebSettings, add_flags, from_flags, split_address
from web.app import create_app

logger = logging.getLogger("web.server")  # not __name__: run as __main__, its lines would miss the project's log level


def bind(listen: str) -> socket.socket:
    """A socket listening on ``listen`` (``host:port``, port 0 for any free one), as uvicorn would bind it.

    Raises:
        UserError: the address is taken or not this machine's.
    """
    host, port = split_address(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {listen}: {exc.strerror}") from exc
    sock.listen(2048)  # uvicorn's backlog
    return sock


def main(argv: list[str] | None = None) -> int:
    """Parse flags (they override ``T2I_WEB_*``) and serve the page until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="web", description="text2image-search: the search page over the gateway")
    add_flags(parser, WebSettings)
    parser.add_argument("--log-level", default="INFO", help="log level of the project's loggers")
    args = parser.parse_args(argv)
    settings = from_flags(WebSettings, args)
    configure_logging(args.log_level, structured=True)
    try:
        sock = bind(settings.listen)
    except UserError as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    address = bound_address(settings.listen, int(sock.getsockname()[1]))
    logger.info("search page listening on http://%s/ (gateway %s)", address, settings.gateway)
    report_bound(address)  # connections queue on the listening socket until uvicorn serves them
    uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
