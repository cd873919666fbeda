"""The gateway's TLS: server certificates from files, mutual TLS when a client CA is set, reloaded when the files change.

gRPC asks ``fetch`` for the certificate configuration at each new handshake; it returns a new one
when a file's modification time or size changed (cert-manager renewing a mounted Secret, say),
and None to keep the current one. Connections already open keep their session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from core.errors import UserError

logger = logging.getLogger(__name__)

CHECK_S = 1.0  # at most one stat of the files per second, however many handshakes


class CertificateFiles:
    """The server's key and chain, and the client CA for mutual TLS, with reloading."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        """Read the files now.

        Raises:
            UserError: a file is missing.
        """
        self.paths = [Path(cert), Path(key), *([Path(client_ca)] if client_ca else [])]
        self.mutual = client_ca is not None
        self._checked = time.monotonic()
        self._signature = self._stat()
        self.config = self._load()

    def _stat(self) -> list[tuple[int, int]]:
        try:
            return [(path.stat().st_mtime_ns, path.stat().st_size) for path in self.paths]
        except OSError as exc:
            raise UserError(f"TLS file missing: {exc.filename}; check T2I_TLS_CERT, T2I_TLS_KEY and T2I_TLS_CLIENT_CA") from exc

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key, *ca = (path.read_bytes() for path in self.paths)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca[0] if ca else None)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed since the last load, else None (gRPC keeps the current one)."""
        now = time.monotonic()
        if now - self._checked < CHECK_S:
            return None
        self._checked = now
        try:
            signature = self._stat()
            if signature == self._signature:
                return None
            config = self._load()
        except (OSError, UserError) as exc:
            logger.error("keeping the current TLS certificate: %s", exc)
            return None
        self._signature = signature
        self.config = config
        logger.info("TLS certificate reloaded from %s", self.paths[0])
        return config

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that reload the files; with a client CA, clients must present a certificate it signed."""
        # gRPC's fetcher contract is "a new configuration, or None to keep the current one"; the stubs omit the None.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self.fetch)
        return grpc.dynamic_ssl_server_credentials(self.config, fetch, require_client_authentication=self.mutual)
