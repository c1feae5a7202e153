"""Damaged files of every format we read: each reads as a sane image or is refused in one sentence."""

from __future__ import annotations

import pytest

from fuzz_harness import FORMATS, fuzz


@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_files_read_sanely_or_are_refused_in_one_sentence(tmp_path, seed):
    result = fuzz(tmp_path, cases=300, seed=seed)
    counts = result["counts"]
    assert set(counts) == set(FORMATS)
    # the mutations must exercise both paths of every format, or the harness proves nothing
    for fmt in ("nii", "tif", "jpg", "h5"):
        assert counts[fmt].get("read", 0) > 0 and counts[fmt].get("refused", 0) > 0, (fmt, counts[fmt])
    assert counts["nii.gz"].get("refused", 0) > 0 and counts["png"].get("refused", 0) > 0
