"""``bench.reindex_cases``' table: each case's img/s, split and ratio to the naive loop, and where ``make bench``'s section shows it."""

from __future__ import annotations

from bench.reindex_cases import markdown

SMALL = {
    "precision": "int8",
    "cases": {
        "200": {"img_per_s": 24.0, "pipeline_img_per_s": 30.0, "listing_s": 0.9, "pipeline_s": 6.7, "finishing_s": 0.7},
        "2000": {"img_per_s": 28.0, "pipeline_img_per_s": 29.0, "listing_s": 1.1, "pipeline_s": 69.0, "finishing_s": 1.4},
    },
    "baseline_images": 200,
    "baseline_img_per_s": 12.0,
    "ratios": {"200": 2.0, "2000": 28.0 / 12.0},
}


def test_the_table_has_each_case_its_split_and_its_ratio() -> None:
    lines = markdown(SMALL).splitlines()
    assert lines[2] == "| 200 | 24.0 | 30.0 | 0.9 | 6.7 | 0.7 | 2.00× |"
    assert lines[3] == "| 2,000 | 28.0 | 29.0 | 1.1 | 69.0 | 1.4 | 2.33× |"
    assert lines[4].startswith("| baseline, 200 one at a time | 12.0 |")
