"""Command-line flags of the Beam job, their validation, and the Beam options it passes on.

Everything is checked before any work starts; every problem is one PreprocessError line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from beam_preprocess.errors import PreprocessError
from beam_preprocess.shards import DEFAULT_TARGET_SHARD_MB, MIN_SHARDS_PER_SPLIT
from beam_preprocess.transform import RESIZE_MODES
from bonify.cli import BonifyError, OneLineArgumentParser
from bonify.dataflow import check_dataflow_options
from bonify.vocabulary import IMAGE_ENCODINGS

PROGRAM = "bonify-preprocess"

#: The runner used when --runner is not given: FnApiRunner runs locally and offline.
#: (Beam 2.77's default DirectRunner first tries to download the Prism runner.)
DEFAULT_RUNNER = "FnApiRunner"

#: Runners that run in this machine's processes and read Beam's --direct_* options.
LOCAL_RUNNERS = ("fnapirunner", "directrunner")

#: The options that choose how many local worker processes run the job.
LOCAL_WORKER_FLAGS = ("--direct_num_workers", "--direct_running_mode")


@dataclass(frozen=True)
class PreprocessConfig:
    """The job's own settings (Beam's are kept apart as `beam_args`)."""

    input_dir: str  # the folder containing MURA-v1.1/, or MURA-v1.1/ itself (local or gs://)
    output_dir: str  # where shards, manifest.json, rejected.jsonl, TFDS metadata go
    image_size: int = 320  # output side in pixels (square)
    resize: str = "pad"  # "pad" (aspect kept, black padding) or "stretch"
    encoding: str = "png"  # "png", "jpeg" (q95) or "raw" (uint8 bytes)
    val_fraction: float = 0.15  # fraction of MURA train/ patients that go to "validation"
    split_seed: int = 42
    num_shards: int | None = None  # shards per split (before the "fewer images" cap)
    target_shard_mb: float | None = None  # or: pick shard counts for about this many MB each
    overwrite: bool = False


DESCRIPTION = f"""\
Turn a MURA v1.1 tree (its 4 CSVs and PNGs, local or gs://) into the training data: images
resized to one square size, written as sharded TFRecords with a patient-disjoint
train/validation/test split, plus manifest.json (counts and settings), rejected.jsonl (every
image or label row left out, with the reason), data_report.html (a picture of the data) and
TFDS metadata.

Flags not listed below are Apache Beam pipeline options (--runner, --direct_num_workers,
--project, --region, --temp_location, --setup_file, ...). Without --runner the job runs on
this machine ({DEFAULT_RUNNER}, offline) with one worker process per CPU core; set
--direct_num_workers=N --direct_running_mode=multi_processing to use fewer. On
--runner=DataflowRunner, --project, --region and a gs:// --temp_location are required,
--input_dir and --output_dir must be gs://, and the workers get this package from the
Dockerfile's dataflow-worker image (--sdk_container_image=REGISTRY/...@sha256:DIGEST, the
recommended launch: nothing to install at worker start) or, for a small job, from
--setup_file ./setup.py (each worker pip-installs the pinned stack first). See
docs/PREPROCESS.md and docs/DEPLOY.md."""

EXAMPLES = """\
# the demo's sample data, at 128 px, on every local core
bonify-sample --output_dir demo_output/raw
bonify-preprocess --input_dir demo_output/raw --output_dir demo_output/tfrecords --image_size 128
# MURA v1.1 at 320 px (the folder that contains MURA-v1.1/), replacing a previous run
bonify-preprocess --input_dir /data/mura --output_dir /data/tfrecords/mura-320 --overwrite
# on Google Cloud Dataflow, workers from the prebuilt bonify worker image (docs/DEPLOY.md)
bonify-preprocess --input_dir gs://my-bucket/mura --output_dir gs://my-bucket/tfrecords/mura-320 \\
    --runner=DataflowRunner --project=my-project --region=us-central1 \\
    --temp_location=gs://my-bucket/tmp \\
    --sdk_container_image=us-central1-docker.pkg.dev/my-project/bonify/bonify-worker@sha256:DIGEST
# a small Dataflow job without an image: every worker pip-installs bonify at start
bonify-preprocess --input_dir gs://my-bucket/mura --output_dir gs://my-bucket/tfrecords/mura-320 \\
    --runner=DataflowRunner --project=my-project --region=us-central1 \\
    --temp_location=gs://my-bucket/tmp --setup_file=./setup.py"""


def build_parser() -> argparse.ArgumentParser:
    """The job's own flags; anything else is passed to Beam as a pipeline option."""
    parser = OneLineArgumentParser(prog=PROGRAM, description=DESCRIPTION, examples=EXAMPLES)
    parser.add_argument(
        "--input_dir", required=True, help="folder containing MURA-v1.1/, or MURA-v1.1/ itself"
    )
    parser.add_argument("--output_dir", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--image_size", type=int, default=320, help="output side in pixels (default 320)"
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="pad",
        help="pad: keep aspect ratio, pad with black, centred (default); stretch: squash to a square",
    )
    parser.add_argument(
        "--encoding",
        choices=IMAGE_ENCODINGS,
        default="png",
        help="1-channel png (default), jpeg (q95) or raw uint8",
    )
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.15,
        help="fraction of MURA train/ patients put in the validation split, in [0, 1) (default 0.15)",
    )
    parser.add_argument(
        "--split_seed", type=int, default=42, help="seed of the patient split (default 42)"
    )
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument(
        "--num_shards",
        type=int,
        default=None,
        help="shards per split (a split with fewer images gets one image per shard)",
    )
    shards.add_argument(
        "--target_shard_mb",
        type=float,
        default=None,
        help=f"choose shard counts for about this many MB per shard (default {DEFAULT_TARGET_SHARD_MB:g}); "
        f"never fewer than {MIN_SHARDS_PER_SPLIT} shards per split unless it has fewer images",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shards, manifest, rejected list and TFDS metadata of a previous run "
        "in --output_dir (nothing else there is touched)",
    )
    return parser


def validate_config(config: PreprocessConfig) -> None:
    """Raise PreprocessError for values no run could use."""
    if config.image_size <= 0:
        raise PreprocessError(
            f"--image_size must be a positive number of pixels, got {config.image_size}"
        )
    if not 0.0 <= config.val_fraction < 1.0:
        raise PreprocessError(f"--val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.num_shards is not None and config.num_shards <= 0:
        raise PreprocessError(f"--num_shards must be positive, got {config.num_shards}")
    if config.target_shard_mb is not None and not config.target_shard_mb > 0:
        raise PreprocessError(f"--target_shard_mb must be positive, got {config.target_shard_mb}")
    if not config.input_dir.strip():
        raise PreprocessError("--input_dir is empty")
    if not config.output_dir.strip():
        raise PreprocessError("--output_dir is empty")


def check_local_paths(config: PreprocessConfig) -> None:
    """PreprocessError for a local --input_dir that does not exist or a local --output_dir
    that is a file: plain os checks, so the answer comes before Beam and TensorFlow load.
    (gs:// paths are checked by the job itself.)"""
    if "://" not in config.input_dir and not os.path.exists(config.input_dir):
        raise PreprocessError(f"--input_dir {config.input_dir} does not exist")
    if "://" not in config.output_dir and os.path.isfile(config.output_dir):
        raise PreprocessError(f"--output_dir {config.output_dir} is a file, not a folder")


def _beam_option_parser():
    """An argparse parser knowing every Beam pipeline option (as Beam builds it itself)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class _Parser(_BeamArgumentParser):
        def error(self, message: str):
            raise PreprocessError(f"bad Beam pipeline option: {message}")

    parser = _Parser(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself collects its flags
    return parser


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of `flag` in args (`--flag=value` or `--flag value`), last one wins."""
    value = None
    for position, arg in enumerate(args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and position + 1 < len(args):
            value = args[position + 1]
    return value


def resolve_runner_args(beam_args: Sequence[str], cpu_count: int | None) -> list[str]:
    """The Beam flags the job runs with: the user's, plus the local defaults.

    Without --runner the job runs on DEFAULT_RUNNER. On a local runner (FnApiRunner,
    DirectRunner) given neither --direct_num_workers nor --direct_running_mode, it runs one
    worker process per core (`cpu_count`): Beam's own default is one in-process worker,
    which leaves every other core idle. A machine with one core keeps Beam's in-process
    worker (a worker process would only add its start-up). Flags the user gave are kept
    as they are; other runners (Dataflow, Portable, Flink, ...) are left untouched.
    """
    args = list(beam_args)
    runner = _flag_value(args, "--runner")
    if runner is None:
        args.append(f"--runner={DEFAULT_RUNNER}")
        runner = DEFAULT_RUNNER
    if runner.rsplit(".", 1)[-1].lower() not in LOCAL_RUNNERS:
        return args
    if any(_flag_value(args, flag) is not None for flag in LOCAL_WORKER_FLAGS):
        return args
    if cpu_count is None or cpu_count <= 1:
        return args
    return [*args, f"--direct_num_workers={cpu_count}", "--direct_running_mode=multi_processing"]


def beam_options(beam_args: Sequence[str]):
    """PipelineOptions for the pass-through flags (with `resolve_runner_args`' defaults);
    unknown flags are an error (a typo in one of this job's flags would otherwise be
    silently dropped by Beam)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    _, unknown = _beam_option_parser().parse_known_args(list(beam_args))
    if unknown:
        raise PreprocessError(
            f"unknown flag {unknown[0]}: neither a {PROGRAM} flag nor an Apache Beam pipeline option (see --help)"
        )
    return PipelineOptions(resolve_runner_args(beam_args, os.cpu_count()))


def runner_name(options) -> str:
    """The runner's name as given (or the default)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    return runner if isinstance(runner, str) else type(runner).__name__


def describe_runner(options) -> str:
    """The runner and, for a local one, its workers: e.g. "FnApiRunner (2 worker processes)"."""
    from apache_beam.options.pipeline_options import DirectOptions

    runner = runner_name(options)
    if runner.rsplit(".", 1)[-1].lower() not in LOCAL_RUNNERS:
        return runner
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return f"{runner} ({direct.direct_num_workers} worker processes)"
    if direct.direct_running_mode == "multi_threading":
        return f"{runner} ({direct.direct_num_workers} worker threads)"
    return f"{runner} (1 in-process worker)"


def validate_dataflow(config: PreprocessConfig, options) -> None:
    """Check, before launching, what a Dataflow job needs (bonify.dataflow)."""
    try:
        check_dataflow_options(
            options, {"--input_dir": config.input_dir, "--output_dir": config.output_dir}
        )
    except BonifyError as error:
        raise PreprocessError(str(error)) from None


def parse_args(argv: Sequence[str] | None) -> tuple[PreprocessConfig, list[str]]:
    """Split argv into the job's validated config and the pass-through Beam flags."""
    known, beam_args = build_parser().parse_known_args(argv)
    config = PreprocessConfig(
        input_dir=known.input_dir,
        output_dir=known.output_dir,
        image_size=known.image_size,
        resize=known.resize,
        encoding=known.encoding,
        val_fraction=known.val_fraction,
        split_seed=known.split_seed,
        num_shards=known.num_shards,
        target_shard_mb=known.target_shard_mb,
        overwrite=known.overwrite,
    )
    validate_config(config)
    return config, beam_args
