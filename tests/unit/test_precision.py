"""``--precision auto``: int8 where the CPU has VNNI or AMX, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

from core.manifest import cpu_flags, resolve_precision
from t2i.cli import build_parser


def test_auto_follows_the_cpu_flags() -> None:
    assert resolve_precision("auto", {"avx2", "fma"}) == "fp32"
    assert resolve_precision("auto", {"avx2", "avx512_vnni"}) == "int8"
    assert resolve_precision("auto", {"avx_vnni"}) == "int8"
    assert resolve_precision("auto", {"amx_int8"}) == "int8"
    assert resolve_precision("fp16", {"amx_int8"}) == "fp16"  # an explicit choice stays


def test_cpu_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(tmp_path / "none") == set()


def test_the_local_cpu_stack_defaults_to_auto_and_export_to_fp32() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).precision == "auto"
    assert parser.parse_args(["demo"]).precision == "auto"
    assert parser.parse_args(["export"]).precision == "fp32"
