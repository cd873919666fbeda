"""A module's own alias, gateway or model on a stack that is already running, instead of a stack of its own.

A ``LocalStack`` of its own costs a module a Milvus and a Triton start (and its export, if the model
is the session's). ``on_stack`` gives a module what it needs on ``base``'s servers: a ``LocalStack``
with ``base``'s Milvus, ``base``'s Triton or (``own_triton``) one of its own for ``repo``, and a
gateway of its own on ``alias``, with ``extra_env`` as its settings. Its tokens and Milvus password
are ``base``'s (``folder/auth`` and ``folder/milvus`` link to them). At the end it stops only what
it started, and drops the aliases and collections of ``alias`` (as ``tests/support/congruence.py``
does), so the next module sees ``base``'s Milvus as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.stack import LocalStack
from devstack.triton import start_triton


@contextlib.contextmanager
def on_stack(
    base: LocalStack,
    alias: str,
    folder: Path,
    repo: Path | None = None,
    own_triton: bool = False,
    gateway: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[LocalStack]:
    """``base``'s Milvus (and Triton, unless ``own_triton``) with ``repo`` (default ``base.repo``) and a gateway on ``alias``.

    ``repo`` may be a copy of ``base``'s repository (the same model, a manifest of its own) on
    ``base``'s Triton, or another model with ``own_triton``. Without ``gateway`` none is started
    (``start_gateway`` starts it later, as for a ``LocalStack``).
    """
    assert base.milvus_ports is not None and base.triton_ports is not None, "base stack not started"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("auth", "milvus"):
        (folder / name).symlink_to((base.data_dir / name).resolve(), target_is_directory=True)
    view = LocalStack(
        Path(repo or base.repo),
        folder,
        gateway_address="127.0.0.1:0",
        alias=alias,
        extra_env=dict(extra_env or {}),
        triton_env=base.triton_env,
        milvus_ports=base.milvus_ports,
        triton_ports=None if own_triton else base.triton_ports,
    )
    try:
        if own_triton:
            view.triton, view.triton_ports = start_triton(view.repo, folder / "triton", triton_env=base.triton_env)
        if gateway:
            view.start_gateway()
        yield view
    finally:
        view.stop()  # its page, gateway and Triton: milvus is None, so base's Milvus runs on
        drop_alias_family(view)


def drop_alias_family(view: LocalStack) -> None:
    """Drop ``view.alias``, its rollback alias and every collection named ``<alias>_...`` in its Milvus."""
    index = ImageIndex(view.milvus_uri, view.alias, ModelStamp.of(Manifest.read(view.repo)), timeout_s=30, token=view.milvus_token)
    try:
        port = index._connect()
        for name in (view.alias, f"{view.alias}_previous"):
            port.drop_alias(name, timeout=30)  # a missing alias is no error
        for name in port.list_collections(timeout=30):
            if name.startswith(f"{view.alias}_"):
                port.drop_collection(name, timeout=60)
    finally:
        index.close()
