"""Checks every stage makes before it submits a Beam job to Google Cloud Dataflow.

Without them a typo costs minutes: given an invalid or missing gs:// temp_location, Beam
2.77 tries to reach GCS (or to create a default bucket) with long network retries instead
of failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bonify.cli import BonifyError


def is_dry_run(options) -> bool:
    """True for --dry_run=True (Dataflow: build the job, do not submit it)."""
    from apache_beam.options.pipeline_options import TestOptions

    return bool(options.view_as(TestOptions).dry_run)


def is_dataflow(options) -> bool:
    """True when `options` (PipelineOptions, or a --runner value) names Google Cloud Dataflow.

    Accepts every spelling Beam's `create_runner` accepts: `DataflowRunner`, `dataflow`, any
    case, `TestDataflowRunner`, or the runner's dotted class path.
    """
    if isinstance(options, str) or options is None:
        name = options or ""
    else:
        from apache_beam.options.pipeline_options import StandardOptions

        name = options.view_as(StandardOptions).runner or ""
    if not isinstance(name, str):  # a runner object given to PipelineOptions
        name = type(name).__name__
    short = name.rsplit(".", 1)[-1].lower()
    return short.removesuffix("runner") in ("dataflow", "testdataflow")


def check_dataflow_options(options, paths: Mapping[str, str]) -> None:
    """BonifyError naming the flag when a Dataflow job could not run.

    options: the job's PipelineOptions; paths: {flag: value} of the stage's own inputs and
    outputs, which Dataflow workers can only reach as gs:// paths (unless a dry run).
    """
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    try:
        from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
    except ImportError:
        raise BonifyError(
            "--runner=DataflowRunner needs the Google Cloud extras: pip install -e '.[gcp]'"
        ) from None
    cloud = options.view_as(GoogleCloudOptions)
    missing = [
        flag
        for flag, value in (("--project", cloud.project), ("--region", cloud.region))
        if not value
    ]
    if missing:
        raise BonifyError(f"--runner=DataflowRunner needs {' and '.join(missing)}")
    if not (cloud.temp_location or "").startswith("gs://"):
        raise BonifyError(
            f"--runner=DataflowRunner needs a gs:// --temp_location, got {cloud.temp_location or 'none'}"
        )
    # Beam's own name rules, checked here because Beam reacts to an invalid bucket by
    # trying to create a default one (minutes of network retries) instead of failing.
    rules = PipelineOptionsValidator
    for flag, value in (
        ("--temp_location", cloud.temp_location),
        ("--staging_location", cloud.staging_location),
    ):
        if value is None:
            continue
        match = re.fullmatch(rules.GCS_URI, value, re.DOTALL)
        if (
            not match
            or match["SCHEME"] != "gs"
            or not re.fullmatch(rules.GCS_BUCKET, match["BUCKET"])
        ):
            raise BonifyError(
                f"{flag} {value} is not a valid gs://<bucket>/<path> (bucket names: 3-63 of a-z0-9-_.)"
            )
    if not re.fullmatch(rules.PROJECT_ID_PATTERN, cloud.project) and not cloud.project.isdigit():
        raise BonifyError(f"--project {cloud.project} is not a valid Google Cloud project id")
    if not is_dry_run(options):
        for flag, value in paths.items():
            if not value.startswith("gs://"):
                raise BonifyError(
                    f"on Dataflow {flag} must be a gs:// path the workers can read, got {value}"
                )
