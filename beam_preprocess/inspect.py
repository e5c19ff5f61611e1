"""`python -m beam_preprocess.inspect OUT [--split S] [--n K] [--dump_dir D]`: look at
what the job wrote. Prints K records of a split (every field but the image bytes, plus
the decoded image's shape) and can save their images as PNGs in D (local or gs://)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from beam_preprocess.errors import PreprocessError
from bonify.cli import run_command
from bonify.vocabulary import (
    CLASS_NAMES,
    REGIONS,
    SPLITS,
    RecordKeys,
    shard_pattern,
    tf_feature_spec,
)

PROGRAM = "bonify-preprocess-inspect"


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise PreprocessError(f"{message} (see --help)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(
        prog="python -m beam_preprocess.inspect", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("output_dir", help="the Beam job's --output_dir")
    parser.add_argument(
        "--split", choices=SPLITS, default="test", help="split to read (default test)"
    )
    parser.add_argument("--n", type=int, default=5, help="number of records to show (default 5)")
    parser.add_argument(
        "--dump_dir", default=None, help="also write the records' images as PNGs here"
    )
    args = parser.parse_args(argv)
    if args.n <= 0:
        raise PreprocessError(f"--n must be positive, got {args.n}")
    return args


def decode_image(parsed: dict):
    """uint8 tensor (height, width, 1) of a parsed record, whatever its format."""
    import tensorflow as tf

    encoding = parsed[RecordKeys.FORMAT].numpy().decode()
    if encoding == "raw":
        pixels = tf.io.decode_raw(parsed[RecordKeys.IMAGE], tf.uint8)
        return tf.reshape(pixels, (parsed[RecordKeys.HEIGHT], parsed[RecordKeys.WIDTH], 1))
    return tf.io.decode_image(parsed[RecordKeys.IMAGE], channels=1, expand_animations=False)


def read_records(output_dir: str, split: str, count: int) -> list[dict]:
    """The first `count` records of a split (shards in name order) as dicts of tensors,
    each with the decoded image under "decoded_image"."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/{shard_pattern(split)}"))
    if not files:
        raise PreprocessError(
            f"{output_dir} has no shards of split {split!r} ({shard_pattern(split)})"
        )
    records = []
    for serialized in tf.data.TFRecordDataset(files).take(count):
        parsed = tf.io.parse_single_example(serialized, tf_feature_spec())
        parsed["decoded_image"] = decode_image(parsed)
        records.append(parsed)
    return records


def describe(record: dict) -> str:
    """One record as readable lines (no image bytes)."""
    lines = []
    for key, value in record.items():
        if key in (RecordKeys.IMAGE, "decoded_image"):
            continue
        value = value.numpy()
        shown = value.decode() if isinstance(value, bytes) else int(value)
        if key == RecordKeys.LABEL:
            shown = f"{shown} ({CLASS_NAMES[shown]})"
        elif key == RecordKeys.REGION:
            shown = f"{shown} ({REGIONS[shown]})"
        lines.append(f"  {key}: {shown}")
    lines.append(
        f"  image: {len(record[RecordKeys.IMAGE].numpy())} bytes, decoded shape {tuple(record['decoded_image'].shape)}"
    )
    return "\n".join(lines)


def inspect_output(output_dir: str, split: str, count: int, dump_dir: str | None) -> int:
    """Print `count` records of `split`; write their images to dump_dir. Returns how many."""
    import tensorflow as tf

    if not tf.io.gfile.exists(output_dir):
        raise PreprocessError(f"{output_dir} does not exist")
    records = read_records(output_dir, split, count)
    if dump_dir:
        tf.io.gfile.makedirs(dump_dir)
    for number, record in enumerate(records):
        print(f"record {number} of {split}:")
        print(describe(record))
        if dump_dir:
            label = CLASS_NAMES[int(record[RecordKeys.LABEL])]
            target = f"{dump_dir.rstrip('/')}/{split}-{number:04d}-{label}.png"
            tf.io.gfile.GFile(target, "wb").write(tf.io.encode_png(record["decoded_image"]).numpy())
            print(f"  written: {target}")
    return len(records)


def _run(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    inspect_output(args.output_dir, args.split, args.n, args.dump_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inspector with `argv`; returns the exit code."""
    return run_command(PROGRAM, _run, argv)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
