"""docs/api.md is what protos/api_doc.py makes from the proto's comments now (``make docs-api`` rewrites it)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "api.md"
PROTO = "text2image/v1/text2image.proto"


def api_doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_doc", ROOT / "protos" / "api_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_api_md_is_in_sync_with_the_proto() -> None:
    assert PAGE.read_text() == api_doc().render(), "docs/api.md is stale: run make docs-api"


def test_every_rpc_message_field_and_enum_value_is_on_the_page() -> None:
    from google.protobuf import descriptor_pb2

    from text2image.v1 import text2image_pb2

    file = descriptor_pb2.FileDescriptorProto()
    text2image_pb2.DESCRIPTOR.CopyToProto(file)
    page = PAGE.read_text()
    for service in file.service:
        assert f"### {service.name}\n" in page
        for method in service.method:
            assert f"| `{method.name}` |" in page
    for message in file.message_type:
        section = page[page.index(f"\n### {message.name}\n") :].split("\n### ", 2)[1]
        for field in message.field:
            assert f"| `{field.name}` | {field.number} |" in section, f"{message.name}.{field.name}"
    for enum in file.enum_type:
        for value in enum.value:
            assert f"| `{value.name}` | {value.number} |" in page


def test_the_page_carries_comments_numbers_types_and_labels() -> None:
    page = PAGE.read_text()
    assert "| `terms` | 1 | [`QueryTerm`](#queryterm) | repeated | The terms; 1..16 (more: INVALID_ARGUMENT)." in page
    assert "| `min_score` | 4 | `float` | optional |" in page
    assert "| `image` | 1 | `bytes` | oneof `source` | Encoded image bytes" in page
    assert "| `FindDuplicates` | [`FindDuplicatesRequest`](#findduplicatesrequest) | stream [`FindDuplicatesResponse`](#findduplicatesresponse) |" in page
    assert "| `modified_time` | 5 | `google.protobuf.Timestamp` |  |" in page
    assert "| `CUTOFF_AUTOCUT` | 2 | Cut the ranking at its first large jump in score." in page


def test_a_changed_comment_makes_the_page_stale(tmp_path: Path) -> None:
    (tmp_path / "text2image" / "v1").mkdir(parents=True)
    proto = tmp_path / PROTO
    shutil.copy(ROOT / "protos" / PROTO, proto)
    text = proto.read_text()
    old = "  // How many hits to return; 1..max_top_k of the server.\n  int32 top_k = 3;"
    assert text.count(old) == 1
    proto.write_text(text.replace(old, "  // How many hits to return (a planted change).\n  int32 top_k = 3;"))
    planted = api_doc().render(tmp_path)
    assert planted != PAGE.read_text()
    assert "| `top_k` | 3 | `int32` |  | How many hits to return (a planted change). |" in planted


def test_check_exits_1_on_a_stale_page_and_writes_nothing(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text(PAGE.read_text().replace("Rank indexed images by similarity to a sentence.", "Something else."))
    before = stale.read_text()
    result = subprocess.run([sys.executable, str(ROOT / "protos" / "api_doc.py"), "--check", "--out", str(stale)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "is stale: run make docs-api" in result.stderr, result.stderr
    assert stale.read_text() == before
    fresh = subprocess.run([sys.executable, str(ROOT / "protos" / "api_doc.py"), "--check", "--out", str(PAGE)], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
