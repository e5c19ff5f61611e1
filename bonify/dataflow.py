"""Checks every stage makes before it submits a Beam job to Google Cloud Dataflow.

Without them a typo costs minutes: given an invalid or missing gs:// temp_location, Beam
2.77 tries to reach GCS (or to create a default bucket) with long network retries instead
of failing; given a worker image Dataflow cannot pull, the job starts, and its workers fail
to start minutes later.

The workers get bonify one of two ways (docs/DEPLOY.md): the worker image (the Dockerfile's
`dataflow-worker` stage, `--sdk_container_image=REGISTRY/...@sha256:DIGEST`), which holds
bonify and its whole stack, or `--setup_file ./setup.py`, which makes every worker build
and pip-install it at start.
"""

from __future__ import annotations

import re
import sys
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


# Docker's image reference grammar (github.com/distribution/reference): the name's first
# component is a registry host when it holds a "." or a ":" (or is "localhost"); without one,
# Docker reads the name as a Docker Hub repository.
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = rf"{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REPOSITORY = re.compile(rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
IMAGE_REFERENCE = re.compile(
    rf"{IMAGE_REPOSITORY.pattern}(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)

#: Registry hosts that only the launching machine can reach, never a Dataflow worker.
LOCAL_REGISTRIES = ("localhost", "127.0.0.1")

#: What the worker-image errors point to.
REPOSITORY_EXAMPLE = "us-central1-docker.pkg.dev/PROJECT/REPOSITORY"
IMAGE_EXAMPLE = f"{REPOSITORY_EXAMPLE}/bonify-worker@sha256:DIGEST"


def registry_of(reference: str) -> str | None:
    """The registry host of an image reference or repository path (None: Docker Hub implied)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def check_image_reference(flag: str, reference: str, repository_only: bool = False) -> None:
    """BonifyError unless `reference` is an image Dataflow workers can pull (with
    `repository_only`: a repository to push one to): valid Docker syntax with an explicit
    registry host other than this machine."""
    pattern, kind, form, example = (
        (IMAGE_REPOSITORY, "repository", "REGISTRY/PATH", REPOSITORY_EXAMPLE)
        if repository_only
        else (IMAGE_REFERENCE, "reference", "REGISTRY/PATH[:TAG][@sha256:DIGEST]", IMAGE_EXAMPLE)
    )
    if not pattern.fullmatch(reference):
        raise BonifyError(
            f"{flag} {reference} is not a valid image {kind} ({form}, path in lowercase), "
            f"e.g. {example}"
        )
    registry = registry_of(reference)
    if registry is None:
        raise BonifyError(
            f"{flag} {reference} names no registry, and Dataflow workers pull the image from "
            f"one: give its full name, e.g. {example} (docs/DEPLOY.md)"
        )
    if re.sub(r":[0-9]+$", "", registry) in LOCAL_REGISTRIES:
        raise BonifyError(
            f"{flag} {reference} is on this machine's registry {registry}, which Dataflow "
            f"workers cannot reach: use Artifact Registry, e.g. {example}"
        )


def check_worker_image_options(options) -> None:
    """BonifyError for worker-image options a Dataflow job could not start its workers
    with; a warning line on stderr for --setup_file together with an image.

    --setup_file with an image is allowed (the quick way to try a code change on the
    image's stack), but the workers then reinstall bonify from the sdist over the image's
    copy, so the digest no longer says which code ran.
    """
    from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions

    worker = options.view_as(WorkerOptions)
    setup = options.view_as(SetupOptions)
    image = worker.sdk_container_image
    # Beam copies --sdk_container_image into the deprecated flag when it validates options.
    if worker.worker_harness_container_image not in (None, image):
        raise BonifyError(
            "--worker_harness_container_image is deprecated and takes only Dataflow's own "
            "images: give the bonify worker image as --sdk_container_image"
        )
    if image:
        check_image_reference("--sdk_container_image", image)
    engine = setup.prebuild_sdk_container_engine
    if engine and image:
        raise BonifyError(
            "--sdk_container_image and --prebuild_sdk_container_engine: give one. The image "
            "already holds bonify; a prebuild engine would build and run a new image on top "
            "of it at every submission instead of the one named"
        )
    if engine and not setup.docker_registry_push_url:
        raise BonifyError(
            f"--prebuild_sdk_container_engine={engine} needs --docker_registry_push_url "
            f"(an Artifact Registry repository, e.g. {REPOSITORY_EXAMPLE}) "
            "to push the image the workers pull"
        )
    if setup.docker_registry_push_url:
        check_image_reference(
            "--docker_registry_push_url", setup.docker_registry_push_url, repository_only=True
        )
    if image and setup.setup_file:
        print(
            f"warning: --setup_file {setup.setup_file} with --sdk_container_image: every worker "
            "reinstalls bonify from the sdist over the image's copy at start; drop "
            "--setup_file to run exactly the image's code",
            file=sys.stderr,
        )


def check_workers_get_bonify(options) -> None:
    """BonifyError when nothing gives the workers bonify: Beam's default worker image has
    no bonify, so every worker would fail to unpickle the job's code after start-up."""
    from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions

    setup = options.view_as(SetupOptions)
    if not (
        options.view_as(WorkerOptions).sdk_container_image
        or setup.setup_file
        or setup.extra_packages
        or setup.requirements_file
    ):
        raise BonifyError(
            f"on Dataflow the workers need bonify: give the worker image, "
            f"--sdk_container_image={IMAGE_EXAMPLE} (docs/DEPLOY.md), or --setup_file ./setup.py"
        )


def check_dataflow_options(options, paths: Mapping[str, str]) -> None:
    """BonifyError naming the flag when a Dataflow job could not run.

    options: the job's PipelineOptions; paths: {flag: value} of the stage's own inputs and
    outputs, which Dataflow workers can only reach as gs:// paths (unless a dry run). The
    worker image flags are checked too (`check_worker_image_options`); outside a dry run,
    the workers must get bonify from an image or from --setup_file.
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
    check_worker_image_options(options)
    # A dry run only builds the job here: no worker reads these paths or imports bonify.
    if not is_dry_run(options):
        for flag, value in paths.items():
            if not value.startswith("gs://"):
                raise BonifyError(
                    f"on Dataflow {flag} must be a gs:// path the workers can read, got {value}"
                )
        check_workers_get_bonify(options)
