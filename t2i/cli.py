"""``t2i``: the command line of text2image-search.

Subcommands: ``export``, ``serve``, ``up``, ``demo``, ``search``, ``duplicates``, ``info``, ``reindex``, ``finalize``,
``rollback``, ``models``, ``dataset shapes``, ``finetune``, ``eval`` and ``shapes-demo``.
Addresses and limits come from ``T2I_*`` environment variables (see ``core/settings.py``);
flags override them. Errors a person can act on print one line and exit 2; bugs keep their
traceback.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import grpc

from core.errors import UserError
from core.logs import PROJECT_LOGGERS, configure_logging
from core.manifest import AUTO, DEFAULT_MODEL, PRECISIONS
from core.settings import GatewaySettings, Settings, TlsFiles, WebSettings, add_flags
from t2i.client import GatewayClient, format_hits

# Each subcommand's modules are imported when it runs (or when its arguments are built), never at the
# top: the base install lacks the extras' packages (serve: gateway; reindex: tqdm and fsspec; export: torch).
DEFAULT_LOG_LEVEL = "WARNING"
# The extras of pyproject.toml that each subcommand needs beyond the base install.
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("export",),
    "serve": ("gateway",),
    "up": ("devstack", "gateway", "export", "web", "reindex", "relevance"),  # reindex and relevance: for --shapes
    "demo": ("devstack", "gateway", "export", "reindex"),
    "search": (),
    "duplicates": (),
    "info": (),
    "eval": ("relevance",),
    "reindex": ("reindex",),
    "finalize": ("reindex",),
    "rollback": ("reindex",),
    "models": ("reindex",),
    "dataset": ("relevance",),
    "finetune": ("relevance", "export"),
    "shapes-demo": ("devstack", "gateway", "export", "reindex", "relevance"),
}


def missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """The line that names the extra to install when ``command`` lacks a third-party module; None for our own modules (a bug)."""
    top = (exc.name or "").split(".")[0]
    if not top or top in PROJECT_LOGGERS:
        return None
    extras = ",".join(EXTRAS.get(command, ()))
    if not extras:
        return f"error: t2i {command} needs the module {top!r}, which this environment lacks; reinstall text2image-search"
    return f"error: t2i {command} needs the {extras} extra (module {top!r} is missing): pip install 'text2image-search[{extras}]'"


def _up_model(args: argparse.Namespace, settings: GatewaySettings, web: WebSettings, data_dir: Path) -> tuple[Path, str, str, Path | None]:
    """``t2i up``'s model repository, alias, image roots and, with ``--shapes``, the shapes images to index.

    Raises:
        UserError: ``--shapes`` with ``--model-repository`` (the shapes model has a repository of its own).
    """
    if not args.shapes:
        from t2i.demo import ensure_model

        repo = Path(args.model_repository or settings.model_repository)
        ensure_model(repo, args.model, args.fallback, args.precision)
        return repo, settings.collection_alias, web.image_roots, None
    if args.model_repository:
        raise UserError("--shapes serves the shipped shapes model from a repository of its own (under --data-dir): drop --model-repository")
    from t2i.shapes_demo import shapes_repository

    repo, shapes = shapes_repository(data_dir / "shapes-demo")
    return repo, "shapes", str(shapes), shapes


def _up(args: argparse.Namespace) -> int:
    from devstack.milvus import MilvusPorts
    from devstack.stack import LocalStack
    from devstack.triton import TritonPorts

    settings, web = GatewaySettings(), WebSettings()
    data_dir = Path(args.data_dir or settings.data_dir)
    repo, alias, image_roots, shapes = _up_model(args, settings, web, data_dir)
    milvus_port = int(settings.milvus_uri.rsplit(":", 1)[-1])
    triton_port = int(settings.triton_url.rsplit(":", 1)[-1])
    stack = LocalStack(
        repo,
        data_dir / "stack",
        gateway_address=args.listen or settings.listen,
        metrics_port=settings.metrics_port,
        alias=alias,
        triton_env=settings.triton_env,
        web_address=None if args.no_web else (args.web_listen or web.listen),
        image_roots=":".join(args.image_root) if args.image_root else image_roots,
    )
    # The client ports are fixed (T2I_MILVUS_URI, T2I_TRITON_URL: 19530 and 8001 by default; 0 for any); the
    # others are chosen here, and chosen again when one was taken before its server bound it (ChosenPorts).
    stack.milvus_ports = MilvusPorts(proxy=milvus_port)
    stack.triton_ports = TritonPorts(grpc=triton_port)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"starting Milvus, Triton, the gateway{'' if args.no_web else ' and the search page'} ...")
    with stack:
        print("text2image-search is up:")
        print(stack.describe())
        if stack.web_address:
            print(f"open http://{stack.web_address}/ (thumbnails from {stack.image_roots or 'no folder'}; --image-root DIR, repeatable, replaces this list)")
        # Flushed: a launcher that reads this through a pipe learns the addresses now (those of port 0 only from here).
        if shapes is not None:
            from t2i.shapes_demo import index_shapes

            print(f"the shipped shapes model serves {shapes} ({index_shapes(stack.settings(), shapes)})")
            print("try on the page or here: t2i search 'two red circles' ; Ctrl-C stops everything", flush=True)
        else:
            print("try: t2i reindex PATH ; t2i search 'red car' ; Ctrl-C stops everything", flush=True)
        while not stopped.wait(1.0):
            for process in (stack.milvus, stack.triton, stack.gateway, stack.web):
                if process is not None and not process.alive():
                    print(f"{process.name} exited unexpectedly; log {process.log_path}:\n{process.log_tail()}", file=sys.stderr)
                    return 2
        print("stopping ...")
    return 0


def _client(args: argparse.Namespace) -> GatewayClient:
    """A client for ``search`` and ``info``: TLS from ``--tls``/``--ca``/``--cert``/``--key``; the token from T2I_TOKEN or the local stack."""
    tls = TlsFiles(args.ca, args.cert, args.key) if args.tls or args.ca or args.cert else None
    return GatewayClient(args.address, tls=tls)


def _search(args: argparse.Namespace) -> int:
    from text2image.v1 import text2image_pb2 as pb

    client = _client(args)
    cutoff = pb.Cutoff.Value(f"CUTOFF_{args.cutoff.upper()}")
    try:
        if args.image:
            image = Path(args.image).read_bytes()
            search = functools.partial(client.search_image, top_k=args.top_k, image=image, cutoff=cutoff)
            title = f"image query {args.image}"
        elif args.id:
            search = functools.partial(client.search_image, top_k=args.top_k, id=args.id, exclude_self=True, cutoff=cutoff)
            title = f"similar to {args.id}"
        elif args.query:
            search = functools.partial(client.search_text, args.query, top_k=args.top_k, cutoff=cutoff)
            title = f'query "{args.query}"'
        else:
            print("give a query, --image PATH or --id ID", file=sys.stderr)
            return 2
        token = args.page_token
        for page in range(max(args.pages, 1)):  # each page starts after the previous one (page_token)
            response = search(page_token=token)
            print(format_hits(title if args.pages == 1 else f"{title}, page {page + 1}", response))
            token = response.next_page_token
            if not token:
                break
        if token and (args.pages > 1 or args.page_token):
            print(f"next page: --page-token {token}")
    finally:
        client.close()
    return 0


def _info(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        print(client.info())
    finally:
        client.close()
    return 0


def _relevance(args: argparse.Namespace) -> int:
    """``eval``, ``dataset``, ``finetune`` and ``shapes-demo``."""
    if args.command == "eval":
        from t2i import evaluate as t2i_evaluate

        return t2i_evaluate.command(args, None if args.compare else _client(args))
    if args.command == "dataset":
        from relevance import shapes

        return shapes.command(args)
    if args.command == "finetune":
        from relevance.finetune import command as finetune_command

        return finetune_command(args)
    from t2i.shapes_demo import run_shapes_demo

    run_shapes_demo(Path(args.data_dir or Settings().data_dir) / "shapes-demo", retrain=args.retrain, ship=args.ship)
    return 0


def _rpc_error(exc: grpc.RpcError, address: str) -> str:
    """One line for a failed call to the gateway, with how to start it when it cannot be reached."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "Triton" not in details and "Milvus" not in details:
        return (
            f"error: cannot reach the gateway at {address} ({details}); start the local stack with 'make up' "
            "(or 't2i up'), or give the address of a running gateway with --address or T2I_LISTEN"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        local = Settings().data_dir / "stack" / "auth"
        return f"error: UNAUTHENTICATED: {details}; set T2I_TOKEN or T2I_TOKEN_FILE ('t2i up' keeps its tokens in {local})"
    return f"error: {code.name}: {details}"


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument(
        "--model", default=DEFAULT_MODEL, help="hub id, local checkpoint folder, 'random' (ViT-B/32) or 'tiny' (NAME@SEED: other random weights)"
    )
    export.add_argument("--out", type=Path, default=None, help="Triton model repository to write (default T2I_MODEL_REPOSITORY)")
    export.add_argument(
        "--precision", choices=(*PRECISIONS, AUTO), default="fp32", help="weights precision of the ONNX files (auto: int8 on CPUs with VNNI/AMX, else fp32)"
    )
    export.add_argument("--version", type=int, default=1, help="model version folder (a rollout exports the next version beside the served one)")


def _stack_arguments(command: argparse.ArgumentParser, name: str) -> None:
    """``up`` and ``demo``."""
    command.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint to export when the repository does not hold it")
    command.add_argument("--fallback", default="random", help="model to use when the hub is unreachable ('' for none)")
    command.add_argument("--model-repository", default=None, help="Triton model repository (default T2I_MODEL_REPOSITORY)")
    command.add_argument("--data-dir", default=None, help="where data and logs go (default T2I_DATA_DIR, ./data)")
    command.add_argument(
        "--precision", choices=(*PRECISIONS, AUTO), default=AUTO, help="precision of an export (default auto: int8 on CPUs with VNNI/AMX, else fp32)"
    )
    if name == "up":
        command.add_argument("--listen", default=None, help="gateway address (default T2I_LISTEN, 127.0.0.1:50051)")
        command.add_argument("--web-listen", default=None, help="search page address (default T2I_WEB_LISTEN, 127.0.0.1:8080)")
        command.add_argument("--no-web", action="store_true", help="do not start the search page")
        command.add_argument(
            "--shapes",
            action="store_true",
            help="serve the shipped shapes model on its own collection (alias shapes) with its evaluation images indexed (make up)",
        )
        command.add_argument(
            "--image-root",
            action="append",
            default=None,
            help="folder whose images the page may show (repeatable; replaces T2I_WEB_IMAGE_ROOTS, default ./data)",
        )


def _client_arguments(command: argparse.ArgumentParser, name: str) -> None:
    """``search``, ``info`` and ``eval``: what they ask and where the gateway is."""
    if name == "search":
        command.add_argument("query", nargs="?", help="text to search for")
        command.add_argument("--image", help="search with this image file instead")
        command.add_argument("--id", help="search with the vector of this indexed image instead")
        command.add_argument("--top-k", type=int, default=5)
        command.add_argument(
            "--cutoff", choices=("none", "autocut", "calibrated"), default="none", help="relevance cut-off after the top-k (calibrated: t2i eval --calibrate)"
        )
        command.add_argument("--pages", type=int, default=1, help="walk this many pages of --top-k hits and print where to go on (default 1)")
        command.add_argument("--page-token", default="", help="start at the page this token names (the 'next page' a previous search printed)")
    elif name == "duplicates":
        from t2i.duplicates import add_arguments

        add_arguments(command)
    elif name == "eval":
        from t2i import evaluate as t2i_evaluate

        t2i_evaluate.add_arguments(command)
    command.add_argument("--address", default=None, help="gateway address (default T2I_LISTEN, 127.0.0.1:50051)")
    command.add_argument("--tls", action="store_true", help="talk TLS to the gateway (the system's CA roots unless --ca)")
    command.add_argument("--ca", type=Path, default=None, help="CA certificate (PEM) that signs the gateway's; implies --tls")
    command.add_argument("--cert", type=Path, default=None, help="client certificate (PEM) for mutual TLS; implies --tls")
    command.add_argument("--key", type=Path, default=None, help="client private key (PEM) for mutual TLS")


def _batch_arguments(command: argparse.ArgumentParser, name: str) -> None:
    """``reindex``, ``finalize`` and ``models`` (``rollback`` takes none)."""
    if name == "models":
        from reindex import rollout

        rollout.add_arguments(command)
        return
    from reindex import main as reindex_main

    (reindex_main.add_arguments if name == "reindex" else reindex_main.add_finalize_arguments)(command)


def _dataset_arguments(command: argparse.ArgumentParser) -> None:
    from relevance import shapes

    dataset = command.add_subparsers(dest="dataset", required=True)
    shapes.add_arguments(dataset.add_parser("shapes", help="coloured shapes with captions.csv, labels.csv and queries.jsonl"))


def _shapes_demo_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--data-dir", default=None, help="where data and logs go (default T2I_DATA_DIR, ./data)")
    command.add_argument(
        "--retrain",
        action="store_true",
        help="run the whole experiment: train the base and the fine-tuned variants (cached by their inputs), evaluate them all",
    )
    command.add_argument("--ship", action="store_true", help="with --retrain: write the new model over relevance/models/shapes")


def _finetune_arguments(parser: argparse.ArgumentParser) -> None:
    from relevance.config import add_arguments

    add_arguments(parser)


# name → (help, what adds its arguments); a subcommand's modules load only when its arguments are built.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "export": ("export a CLIP checkpoint to a Triton model repository", _export_arguments),
    # The gateway's flags are its settings' (gateway.server.add_arguments does the same), so no gateway import here.
    "serve": ("run the gRPC gateway (Triton and Milvus must be running)", lambda parser: add_flags(parser, GatewaySettings)),
    "up": ("run Milvus, Triton and the gateway until Ctrl-C", lambda parser: _stack_arguments(parser, "up")),
    "demo": ("index sample photos, run example queries, stop", lambda parser: _stack_arguments(parser, "demo")),
    "search": ("query a running gateway", lambda parser: _client_arguments(parser, "search")),
    "duplicates": ("list near-duplicate images of a running gateway's index (pairs or --groups)", lambda parser: _client_arguments(parser, "duplicates")),
    "info": ("show the active index of a running gateway", lambda parser: _client_arguments(parser, "info")),
    "eval": ("run judged queries through a running gateway: P@K, R@K, nDCG@K, MRR, mAP", lambda parser: _client_arguments(parser, "eval")),
    "reindex": ("index a folder or s3://bucket/prefix of images into Milvus (or one shard of it)", lambda parser: _batch_arguments(parser, "reindex")),
    "finalize": ("verify a sharded run's collection against the listing and swap the alias to it", lambda parser: _batch_arguments(parser, "finalize")),
    "rollback": ("swap the alias back to the collection the last rebuild replaced", lambda parser: None),
    "models": ("list, reload or prune the model versions Triton serves", lambda parser: _batch_arguments(parser, "models")),
    "dataset": ("generate a labelled dataset", _dataset_arguments),
    "finetune": ("fine-tune CLIP on your captions with its contrastive loss (FLYP)", _finetune_arguments),
    "shapes-demo": ("offline: train a small CLIP on generated shapes, index, query and evaluate it", _shapes_demo_arguments),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``t2i`` argument parser; the arguments of ``commands`` only (default: every subcommand's).

    Raises ``ModuleNotFoundError`` when a chosen subcommand's extra is not installed.
    """
    parser = argparse.ArgumentParser(prog="t2i", description="text2image-search: CLIP text-to-image search over gRPC")
    parser.add_argument("--log-level", default=None, help=f"log level of the project's loggers (default {DEFAULT_LOG_LEVEL}; serve: the gateway's default)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if commands is None or name in commands:
            add_arguments(command)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand that ``argv`` names (the first word after the top-level options), if any."""
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--log-level")
    _, rest = top.parse_known_args(argv)
    return next((word for word in rest if not word.startswith("-")), None)


def _models_and_stack(args: argparse.Namespace) -> int:
    """``export``, ``up`` and ``demo`` (torch and transformers, imported here: seconds)."""
    if args.command == "up":
        return _up(args)
    if args.command == "export":
        from export.main import command as export_command

        args.out = args.out or Settings().model_repository
        return export_command(args)
    from t2i.demo import run_demo

    settings = Settings()
    repo = Path(args.model_repository or settings.model_repository)
    return run_demo(repo, Path(args.data_dir or settings.data_dir) / "demo", args.model, args.fallback or None, args.precision)


def _serve(args: argparse.Namespace) -> int:
    from gateway import server as gateway_server

    return gateway_server.run(args, args.log_level)


def _batch(args: argparse.Namespace) -> int:
    """``reindex``, ``finalize``, ``rollback`` and ``models``."""
    if args.command == "models":
        from reindex import rollout

        return rollout.command(args, Settings())
    from reindex import main as reindex_main

    batch = {"finalize": reindex_main.finalize_command, "rollback": reindex_main.rollback_command}
    return batch.get(args.command, reindex_main.command)(args, Settings())


def _missing_extra_exit(command: str, exc: ModuleNotFoundError) -> int:
    """Exit 2 with the extra to install; a missing module of our own is a bug and keeps its traceback."""
    line = missing_extra(command, exc)
    if line is None:
        raise exc
    print(line, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``t2i``; exit codes: 0 ok, 2 failure; ``t2i reindex`` adds 1, 3 and 4 (``reindex.report``)."""
    argv = sys.argv[1:] if argv is None else argv
    command = chosen_command(argv)
    try:
        args = build_parser({command} if command in SUBCOMMANDS else ()).parse_args(argv)
        if args.command == "serve":
            return _serve(args)
    except ModuleNotFoundError as exc:
        return _missing_extra_exit(command or "", exc)
    configure_logging(args.log_level or DEFAULT_LOG_LEVEL)
    if args.command in ("search", "duplicates", "info", "eval"):
        args.address = args.address or GatewaySettings().listen
    try:
        if args.command in ("export", "up", "demo"):
            return _models_and_stack(args)
        if args.command == "duplicates":
            from t2i.duplicates import command as duplicates_command

            return duplicates_command(args, _client(args))
        if args.command in ("search", "info"):
            return _search(args) if args.command == "search" else _info(args)
        if args.command in ("eval", "dataset", "finetune", "shapes-demo"):
            return _relevance(args)
        return _batch(args)
    except ModuleNotFoundError as exc:
        return _missing_extra_exit(args.command, exc)
    except grpc.RpcError as exc:
        print(_rpc_error(exc, getattr(args, "address", None) or "?"), file=sys.stderr)
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception:  # noqa: BLE001 - last resort: the traceback is printed
        traceback.print_exc()  # a bug keeps its traceback, and exits 2 like any failure (1 means rejected files with reindex --strict)
    return 2


if __name__ == "__main__":
    sys.exit(main())
