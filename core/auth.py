"""Bearer tokens with scopes: the gateway's token file, its reloading, and where clients find theirs.

The token file (``T2I_AUTH_TOKENS_FILE``, or a Kubernetes Secret mounted as a file) has one token
per line: a name, its scopes and the token, or better its SHA-256 so that the file holds no
secret::

    # name     scopes       token, or sha256:<hex of the token>
    web        read         sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    indexer    read,write   sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752

Only hashes are kept in memory, and a presented token is compared with every known hash in
constant time. The file is read again when it changes (checked at most every ``RELOAD_S``), so
tokens rotate without a restart: add the new one, move clients, remove the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

logger = logging.getLogger(__name__)

SCOPES = ("read", "write")
HASH_PREFIX = "sha256:"
RELOAD_S = 1.0
TOKEN_PREFIX = "t2i_"
TOKEN_ENV = "T2I_TOKEN"
TOKEN_FILE_ENV = "T2I_TOKEN_FILE"


class TokenFileError(UserError):
    """The token file is missing or malformed; the message names the file and line."""


def token_hash(token: str) -> bytes:
    """SHA-256 of a token (what the gateway keeps)."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh random token (256 bits), prefixed so that secret scanners recognize it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    """One known token: its name (for logs), its scopes and the SHA-256 of its value."""

    name: str
    scopes: frozenset[str]
    digest: bytes


def parse_tokens(text: str, source: str = "token file") -> list[TokenEntry]:
    """The entries of a token file's text.

    Raises:
        TokenFileError: a line is malformed, names an unknown scope, or repeats a name.
    """
    entries: list[TokenEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise TokenFileError(f"{source} line {number}: expected 'NAME SCOPES TOKEN' (scopes: {','.join(SCOPES)}), got {len(parts)} fields")
        name, scope_text, secret = parts
        scopes = frozenset(scope_text.split(","))
        if unknown := scopes - set(SCOPES):
            raise TokenFileError(f"{source} line {number}: unknown scope {sorted(unknown)} for {name!r}; scopes are {', '.join(SCOPES)}")
        if any(entry.name == name for entry in entries):
            raise TokenFileError(f"{source} line {number}: the name {name!r} is used twice")
        if secret.startswith(HASH_PREFIX):
            try:
                digest = bytes.fromhex(secret.removeprefix(HASH_PREFIX))
            except ValueError:
                digest = b""
            if len(digest) != hashlib.sha256().digest_size:
                raise TokenFileError(f"{source} line {number}: {name!r} has a malformed hash (sha256: and 64 hex digits)")
        else:
            digest = token_hash(secret)
        entries.append(TokenEntry(name, scopes, digest))
    return entries


class TokenStore:
    """The tokens of one file, read again when the file changes.

    A file that turns malformed or disappears keeps the last good tokens (and logs an error),
    so that a bad edit does not lock every client out.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic):
        """Read ``path`` now.

        Raises:
            TokenFileError: it is missing, malformed, or holds no token.
        """
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._signature = self._stat()
        if self._signature is None:
            raise TokenFileError(f"the token file {self.path} does not exist; create it (see core/auth.py for the format) or point T2I_AUTH_TOKENS_FILE at it")
        self._entries = self._read()
        if not self._entries:
            raise TokenFileError(f"the token file {self.path} holds no token")

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _read(self) -> list[TokenEntry]:
        return parse_tokens(self.path.read_text(), str(self.path))

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._checked < RELOAD_S:
            return
        with self._lock:
            self._checked = now
            signature = self._stat()
            if signature == self._signature:
                return
            self._signature = signature
            try:
                entries = self._read()
            except (OSError, TokenFileError) as exc:
                logger.error("keeping the previous tokens: %s", exc)
                return
            self._entries = entries
            logger.info("token file %s reloaded: %d tokens (%s)", self.path, len(entries), ", ".join(e.name for e in entries))

    @property
    def names(self) -> list[str]:
        """Names of the tokens in force."""
        self._refresh()
        return [entry.name for entry in self._entries]

    def find(self, token: str) -> TokenEntry | None:
        """The entry of ``token``, or None; every hash is compared, in constant time."""
        self._refresh()
        digest = token_hash(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class LocalTokens:
    """Where a local stack keeps its tokens: ``auth/tokens`` (hashes, for the gateway) and one file per client token."""

    folder: Path

    @property
    def server_file(self) -> Path:
        """The gateway's token file (names, scopes, hashes)."""
        return self.folder / "tokens"

    def client_file(self, scope: str) -> Path:
        """The file that holds the raw ``read`` or ``write`` token."""
        return self.folder / f"{scope}.token"

    def token(self, scope: str) -> str:
        """The raw token of ``scope`` (``read`` or ``write``)."""
        return self.client_file(scope).read_text().strip()

    def ensure(self) -> LocalTokens:
        """Create a read token and a write token (read and write scopes) unless both exist; files are 0600."""
        if all(self.client_file(scope).is_file() for scope in SCOPES) and self.server_file.is_file():
            return self
        tokens = {scope: new_token() for scope in SCOPES}
        for scope, token in tokens.items():
            write_private(self.client_file(scope), token + "\n")
        lines = ["# name scopes sha256 (t2i up made these; the raw tokens are in read.token and write.token)"]
        lines += [f"local-{scope} {'read' if scope == 'read' else 'read,write'} {HASH_PREFIX}{token_hash(token).hex()}" for scope, token in tokens.items()]
        write_private(self.server_file, "\n".join(lines) + "\n")
        return self


def client_token(scope: str, data_dir: Path) -> str | None:
    """The token a client presents: ``T2I_TOKEN``, the file ``T2I_TOKEN_FILE`` names, or the local stack's token of ``scope``.

    ``data_dir`` is ``T2I_DATA_DIR``; ``t2i up`` keeps its tokens in ``<data_dir>/stack/auth``.
    """
    if token := os.environ.get(TOKEN_ENV, "").strip():
        return token
    if file := os.environ.get(TOKEN_FILE_ENV):
        return Path(file).read_text().strip()
    local = LocalTokens(Path(data_dir) / "stack" / "auth").client_file(scope)
    return local.read_text().strip() if local.is_file() else None
