"""`python -m beam_preprocess.inspect`: prints records, dumps their images, rewrites the report."""

from __future__ import annotations

import numpy as np
from PIL import Image

from beam_preprocess.inspect import main as inspect_main

from .conftest import one_line


def test_prints_records_and_writes_pngs(sample_shards_dir, tmp_path, capsys):
    dump = tmp_path / "dump"
    argv = ["--output_dir", str(sample_shards_dir), "--split", "validation", "--n", "3"]
    assert inspect_main([*argv, "--dump_dir", str(dump)]) == 0
    out = capsys.readouterr().out
    assert out.count("record ") == 3
    assert "path: MURA-v1.1/train/XR_" in out and "decoded shape (64, 64, 1)" in out
    assert "label: " in out and ("_Normal" in out or "_Abnormal" in out)
    pngs = sorted(dump.glob("validation-*.png"))
    assert len(pngs) == 3
    for png in pngs:
        pixels = np.asarray(Image.open(png))
        assert pixels.shape == (64, 64) and pixels.max() > 0


def test_missing_split_is_one_line_error(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert inspect_main(["--output_dir", str(tmp_path / "out"), "--split", "test"]) == 2
    lines = one_line(capsys.readouterr().err)
    assert len(lines) == 1 and "has no shards of split 'test'" in lines[0]
