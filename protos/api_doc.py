"""Write ``docs/api.md``, the API reference, from the comments of the live proto (``make docs-api``).

The proto is compiled with grpc_tools' protoc into a descriptor set with source info, so the page
holds exactly what protoc reads: every service and its RPCs, then every message with its fields
(number, type, label, comment) and oneofs, then every enum with its values, each in the order of the
file. ``tests/unit/test_api_doc.py`` fails when ``docs/api.md`` differs from what this writes now.

    python protos/api_doc.py            # write docs/api.md
    python protos/api_doc.py --check    # exit 1 when docs/api.md is stale
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PROTO = "text2image/v1/text2image.proto"
OUTPUT = ROOT.parent / "docs" / "api.md"

# Paths in FileDescriptorProto.source_code_info (descriptor.proto's field numbers).
SYNTAX, MESSAGE, ENUM, SERVICE = 12, 4, 5, 6
FIELD, NESTED, NESTED_ENUM, ONEOF = 2, 3, 4, 8
VALUE, METHOD = 2, 2

Field = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    Field.TYPE_DOUBLE: "double",
    Field.TYPE_FLOAT: "float",
    Field.TYPE_INT64: "int64",
    Field.TYPE_UINT64: "uint64",
    Field.TYPE_INT32: "int32",
    Field.TYPE_FIXED64: "fixed64",
    Field.TYPE_FIXED32: "fixed32",
    Field.TYPE_BOOL: "bool",
    Field.TYPE_STRING: "string",
    Field.TYPE_BYTES: "bytes",
    Field.TYPE_UINT32: "uint32",
    Field.TYPE_SFIXED32: "sfixed32",
    Field.TYPE_SFIXED64: "sfixed64",
    Field.TYPE_SINT32: "sint32",
    Field.TYPE_SINT64: "sint64",
}


def compile_proto(root: Path, proto: str = PROTO) -> descriptor_pb2.FileDescriptorProto:
    """``proto`` (relative to ``root``) compiled with its comments; SystemExit when protoc fails."""
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptor.binpb"
        code = protoc.main(["protoc", f"-I{root}", f"-I{well_known}", "--include_source_info", f"--descriptor_set_out={out}", str(root / proto)])
        if code != 0:
            raise SystemExit(f"protoc failed on {root / proto} (exit code {code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = [file for file in files.file if file.name == proto]
    return file


class Comments:
    """The comments of a compiled file, looked up by their source path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.by_path = {tuple(location.path): location for location in file.source_code_info.location}

    def __call__(self, *path: int) -> str:
        """The leading (then trailing) comment at ``path``, each line without protoc's leading space."""
        location = self.by_path.get(path)
        if location is None:
            return ""
        parts = [location.leading_comments, location.trailing_comments]
        lines = [line.removeprefix(" ").rstrip() for part in parts if part for line in part.strip("\n").split("\n")]
        return "\n".join(lines).strip("\n")


def cell(text: str) -> str:
    """``text`` as one Markdown table cell: one line, pipes escaped."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip()).replace("|", "\\|")


def anchor(name: str) -> str:
    """The anchor GitHub gives the heading ``### name``."""
    return name.lower()


def type_name(field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
    """The field's type: a scalar's name, or a link to a message or enum of this file, or its full name."""
    if field.type in SCALARS:
        return f"`{SCALARS[field.type]}`"
    name = field.type_name.lstrip(".")
    local = name.removeprefix(f"{package}.")
    if local != name:
        return f"[`{local}`](#{anchor(local)})"
    return f"`{name}`"


def label(field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto) -> str:
    if field.label == Field.LABEL_REPEATED:
        return "repeated"
    if field.proto3_optional:
        return "optional"
    if field.HasField("oneof_index"):
        return f"oneof `{message.oneof_decl[field.oneof_index].name}`"
    return ""


def render_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str, package: str, comments: Comments) -> list[str]:
    """The section of one message (then of its nested messages and enums)."""
    name = f"{prefix}{message.name}"
    lines = [f"### {name}", ""]
    if comment := comments(*path):
        lines += [comment, ""]
    for index, oneof in enumerate(message.oneof_decl):
        members = [field.name for field in message.field if field.HasField("oneof_index") and field.oneof_index == index and not field.proto3_optional]
        if not members:
            continue  # the synthetic oneof of a proto3 optional field
        described = comments(*path, ONEOF, index)
        lines += [f"**oneof `{oneof.name}`** ({', '.join(f'`{member}`' for member in members)}): {cell(described)}".rstrip(": "), ""]
    if message.field:
        lines += ["| field | number | type | label | description |", "| --- | ---: | --- | --- | --- |"]
        for index, field in enumerate(message.field):
            lines.append(f"| `{field.name}` | {field.number} | {type_name(field, package)} | {label(field, message)} | {cell(comments(*path, FIELD, index))} |")
        lines.append("")
    else:
        lines += ["No fields.", ""]
    for index, nested in enumerate(message.nested_type):
        lines += render_message(nested, (*path, NESTED, index), f"{name}.", package, comments)
    for index, enum in enumerate(message.enum_type):
        lines += render_enum(enum, (*path, NESTED_ENUM, index), f"{name}.", comments)
    return lines


def render_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str, comments: Comments) -> list[str]:
    lines = [f"### {prefix}{enum.name}", ""]
    if comment := comments(*path):
        lines += [comment, ""]
    lines += ["| value | number | description |", "| --- | ---: | --- |"]
    lines += [f"| `{value.name}` | {value.number} | {cell(comments(*path, VALUE, index))} |" for index, value in enumerate(enum.value)]
    return [*lines, ""]


def render(root: Path = ROOT, proto: str = PROTO) -> str:
    """The Markdown page of ``proto`` under ``root``."""
    file = compile_proto(root, proto)
    comments = Comments(file)
    package = file.package
    lines = [
        f"# API reference: `{package}`",
        "",
        f"<!-- Generated from protos/{proto} by protos/api_doc.py (make docs-api): edit the proto's comments, not this page. -->",
        "",
        f"Generated from the comments of [`protos/{proto}`](../protos/{proto}) by `protos/api_doc.py`"
        " (`make docs-api`; `tests/unit/test_api_doc.py` keeps it in sync). Services first, then messages and enums in the"
        " order of the file.",
        "",
    ]
    if intro := comments(SYNTAX):
        lines += [intro, ""]
    lines += ["## Services", ""]
    for index, service in enumerate(file.service):
        lines += [f"### {service.name}", ""]
        if comment := comments(SERVICE, index):
            lines += [comment, ""]
        lines += ["| RPC | request | response | description |", "| --- | --- | --- | --- |"]
        for number, method in enumerate(service.method):
            request = method.input_type.lstrip(".").removeprefix(f"{package}.")
            response = method.output_type.lstrip(".").removeprefix(f"{package}.")
            streamed = ("stream " if method.client_streaming else "", "stream " if method.server_streaming else "")
            lines.append(
                f"| `{method.name}` | {streamed[0]}[`{request}`](#{anchor(request)}) | {streamed[1]}[`{response}`](#{anchor(response)})"
                f" | {cell(comments(SERVICE, index, METHOD, number))} |"
            )
        lines.append("")
    lines += ["## Messages", ""]
    for index, message in enumerate(file.message_type):
        lines += render_message(message, (MESSAGE, index), "", package, comments)
    lines += ["## Enums", ""]
    for index, enum in enumerate(file.enum_type):
        lines += render_enum(enum, (ENUM, index), "", comments)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from what the proto gives now; write nothing")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="the page (default docs/api.md)")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != page:
            print(f"{args.out} is stale: run make docs-api", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
