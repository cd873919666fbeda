"""``t2i models``: which model versions the repository holds, and loading and retiring them in Triton.

A rollout (docs/deploy.md): export the new model as the next version into the repository that
Triton reads (``t2i export --version N``), ``t2i models reload`` (Triton in explicit model-control
mode; in poll mode it loads the folder by itself), reindex ``--full`` with it, and the alias swap
moves every gateway to it. ``t2i models prune`` then deletes the folders of versions that neither
the active nor the kept previous collection was filled with, and reloads, so Triton unloads them.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from dataclasses import dataclass

import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from core.errors import Unavailable
from core.index import index_from_settings
from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest, served_versions
from core.records import ModelStamp
from core.settings import Settings, split_address

MODELS = (TEXT_MODEL, VISION_MODEL)


@dataclass(frozen=True)
class VersionState:
    """One model version: its manifest, whether Triton serves it, and which collections use it."""

    manifest: Manifest
    ready: bool
    collections: tuple[str, ...]


def _triton(settings: Settings) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(settings.triton_url)


def triton_replicas(url: str) -> list[str]:
    """Every address ``host:port`` resolves to (all pods behind a headless Service), in a stable order."""
    url = url.removeprefix("dns:///")
    host, port = split_address(url)
    try:
        addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except OSError as exc:
        raise Unavailable(f"cannot resolve Triton's address {url}: {exc}") from exc
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


def reload_models(settings: Settings) -> list[str]:
    """Ask every Triton replica (explicit model-control mode) to load the CLIP models again; returns the replicas.

    New version folders load and removed ones unload; versions that did not change keep serving
    throughout. ``T2I_TRITON_URL`` may name a headless Service: each of its pods is reloaded.

    Raises:
        Unavailable: a replica refused or is unreachable (in poll or none mode Triton refuses: poll mode loads by itself).
    """
    replicas = triton_replicas(settings.triton_url)
    for replica in replicas:
        client = triton_grpc.InferenceServerClient(replica)
        try:
            for model in MODELS:
                client.load_model(model, client_timeout=300)
        except InferenceServerException as exc:
            raise Unavailable(f"Triton at {replica} did not reload the CLIP models: {exc.message()}") from exc
        finally:
            client.close()
    return replicas


def version_states(settings: Settings) -> list[VersionState]:
    """Every finished version of the repository, oldest first."""
    repo = settings.model_repository
    index = index_from_settings(settings, ModelStamp.of(Manifest.read(repo)), retry_budget_s=settings.milvus_retry_s)
    client = _triton(settings)
    try:
        used = index.family_stamps()
        states = []
        for version in served_versions(repo):
            manifest = Manifest.read_version(repo, version)
            stamp = ModelStamp.of(manifest)
            try:
                ready = all(client.is_model_ready(model, str(version), client_timeout=10) for model in MODELS)
            except InferenceServerException:
                ready = False
            states.append(VersionState(manifest, ready, tuple(name for name, s in used.items() if s == stamp)))
        return states
    finally:
        client.close()
        index.close()


def prune(settings: Settings, reload: bool = True) -> list[int]:
    """Delete the folders of versions no collection (active or previous) uses, never the newest; returns them.

    Reloads Triton afterwards so it unloads them (skip with ``reload=False`` in poll mode).
    """
    states = version_states(settings)
    newest = max(state.manifest.version for state in states)
    unused = [state.manifest.version for state in states if not state.collections and state.manifest.version != newest]
    for version in unused:
        for model in MODELS:
            shutil.rmtree(settings.model_repository / model / str(version))
    if unused and reload:
        reload_models(settings)
    return unused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``t2i models``."""
    parser.add_argument("action", choices=("list", "reload", "prune"), help="list versions; reload them into Triton; prune unused ones")
    parser.add_argument("--no-reload", action="store_true", help="prune: only delete the folders (Triton in poll mode unloads them itself)")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``t2i models``."""
    if args.action == "reload":
        replicas = reload_models(settings)
        print(f"Triton at {', '.join(replicas)} reloaded {', '.join(MODELS)} from {settings.model_repository}")
    elif args.action == "prune":
        removed = prune(settings, reload=not args.no_reload)
        print(f"pruned versions {removed}" if removed else "no unused model version to prune")
    for state in version_states(settings):
        m = state.manifest
        used = ", ".join(state.collections) or "no collection"
        print(f"  version {m.version}: {m.model_id} ({m.precision}, checksum {m.checksum[:12]}) {'served' if state.ready else 'NOT loaded'}; {used}")
    return 0
