"""`python -m beam_preprocess.inspect`: look at what the Beam job wrote."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from beam_preprocess.errors import PreprocessError
from bonify.cli import OneLineArgumentParser, run_command
from bonify.vocabulary import CLASS_NAMES, REGIONS, SPLITS, RecordKeys

PROGRAM = "python -m beam_preprocess.inspect"

DESCRIPTION = """\
Look at what bonify-preprocess wrote to its --output_dir: print the first records of a
split (every field but the image bytes, and the decoded image's shape), save their images
as PNGs (what the model sees), or (re)write data_report.html, the offline picture of the
data (counts per split, class and region charts, sample images per class, original sizes,
views per study, rejects)."""

EXAMPLES = """\
# the first 5 test records
python -m beam_preprocess.inspect --output_dir demo_output/tfrecords
# 10 validation records, with their images saved as PNGs
python -m beam_preprocess.inspect --output_dir demo_output/tfrecords --split validation --n 10 --dump_dir /tmp/images
# rewrite data_report.html beside the shards
python -m beam_preprocess.inspect --output_dir demo_output/tfrecords --report"""


def parse_args(argv: Sequence[str] | None):
    """The validated arguments; a local --output_dir that does not exist is an error here,
    before TensorFlow is imported."""
    parser = OneLineArgumentParser(prog=PROGRAM, description=DESCRIPTION, examples=EXAMPLES)
    parser.add_argument(
        "--output_dir", required=True, help="the Beam job's --output_dir (local or gs://)"
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="test", help="split to read (default test)"
    )
    parser.add_argument("--n", type=int, default=5, help="number of records to show (default 5)")
    parser.add_argument(
        "--dump_dir", default=None, help="also write the records' images as PNGs here"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write OUTPUT_DIR/data_report.html (instead of printing records)",
    )
    args = parser.parse_args(argv)
    if args.n <= 0:
        raise PreprocessError(f"--n must be positive, got {args.n}")
    if "://" not in args.output_dir and not os.path.isdir(args.output_dir):
        raise PreprocessError(f"--output_dir {args.output_dir} does not exist")
    return args


def describe(record: dict) -> str:
    """One record (bonify.dataset.iterate_records) as readable lines, no image bytes."""
    lines = []
    for key, value in record.items():
        if key in (RecordKeys.IMAGE, "image_num_bytes"):
            continue
        shown = value
        if key == RecordKeys.LABEL:
            shown = f"{value} ({CLASS_NAMES[value]})"
        elif key == RecordKeys.REGION:
            shown = f"{value} ({REGIONS[value]})"
        lines.append(f"  {key}: {shown}")
    lines.append(
        f"  image: {record['image_num_bytes']} bytes, decoded shape {tuple(record[RecordKeys.IMAGE].shape)}"
    )
    return "\n".join(lines)


def inspect_output(output_dir: str, split: str, count: int, dump_dir: str | None) -> int:
    """Print `count` records of `split`; write their images to dump_dir. Returns how many."""
    import tensorflow as tf

    from bonify.cli import BonifyError
    from bonify.dataset import iterate_records, split_files

    try:
        files = split_files(output_dir, split)
    except BonifyError:
        raise PreprocessError(
            f"--output_dir {output_dir} has no shards of split {split!r}"
        ) from None
    if dump_dir:
        tf.io.gfile.makedirs(dump_dir)
    number = 0
    for number, record in enumerate(iterate_records(files, limit=count), start=1):
        print(f"record {number - 1} of {split}:")
        print(describe(record))
        if dump_dir:
            label = CLASS_NAMES[int(record[RecordKeys.LABEL])]
            target = f"{dump_dir.rstrip('/')}/{split}-{number - 1:04d}-{label}.png"
            with tf.io.gfile.GFile(target, "wb") as handle:
                handle.write(tf.io.encode_png(record[RecordKeys.IMAGE]).numpy())
            print(f"  written: {target}")
    return number


def _run(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    if args.report:
        from beam_preprocess.report import write_data_report

        print(f"data report: {write_data_report(args.output_dir)}")
    else:
        inspect_output(args.output_dir, args.split, args.n, args.dump_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inspector with `argv`; returns the exit code."""
    return run_command(PROGRAM, _run, argv)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
