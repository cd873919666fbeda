"""A reindex mends rows that Milvus 2.3.5 brought back after an earlier run: a deleted file's row, and a second row of an id.

The chaos campaign saw both once after a finished, verified run (bench/chaos.py): the replaced
version of a changed file and a deleted file's row were there again. They are planted here with
plain Milvus inserts, which keep every row written under a primary key as Milvus does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pymilvus import MilvusClient

from core.index import ImageIndex
from core.records import SCHEMA_FIELDS
from devstack.stack import LocalStack
from export.samples import sample_photos
from tests.support.reindex_jobs import expected_rows
from tests.support.stack import run_t2i


def test_the_next_run_removes_rows_that_came_back(stack: LocalStack, index: ImageIndex, tmp_path: Path) -> None:
    folder = tmp_path / "mended"
    folder.mkdir()
    for path in sample_photos(4):
        shutil.copyfile(path, folder / path.name)
    first = run_t2i(stack, "reindex", str(folder), "--full")
    assert first.returncode == 0, first.stderr
    collection = index.active()
    assert collection is not None
    want = expected_rows(folder)
    assert index.hashes(collection) == want

    raw = MilvusClient(uri=stack.milvus_uri, token=stack.milvus_token)
    try:
        ids = sorted(want)
        fields = sorted(SCHEMA_FIELDS[index.schema_version(collection)])
        rows = raw.query(collection, filter="id in " + json.dumps(ids[:2]), output_fields=fields, consistency_level="Strong")
        doubled, template = sorted(rows, key=lambda row: row["id"])
        raw.insert(collection, [dict(doubled)])  # the same id, a second row
        raw.insert(collection, [{**template, "id": "gone.png", "uri": str(folder / "gone.png")}])  # a deleted file's row
        assert index.count(collection) == len(want) + 2
        assert index.duplicated(collection, ids) == [doubled["id"]]

        mended = run_t2i(stack, "reindex", str(folder))
        assert mended.returncode == 0, mended.stdout + mended.stderr
        assert "1 rows deleted" in mended.stdout
        assert f"holds 1 ids twice ({doubled['id']})" in mended.stderr
        assert index.hashes(collection) == want
        assert index.count(collection) == len(want)
        assert index.duplicated(collection, ids) == []
    finally:
        raw.close()
