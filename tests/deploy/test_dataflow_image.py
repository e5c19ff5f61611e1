"""Dataflow workers from the prebuilt image: the Dockerfile's `dataflow-worker` stage, the
worker-image flags' checks (bonify.dataflow), and offline dry runs of both Beam jobs that
run their workers on the image.

No Docker daemon here: the Dockerfile is read, not built. The dry runs build the Dataflow
job exactly as a submission does, up to the request that would create it.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from bonify.cli import BonifyError
from bonify.dataflow import check_dataflow_options
from tests.deploy.dockerfile import stage, stages
from tests.deploy.test_deploy_doc import doc_commands
from tests.deploy.test_manifests import console_scripts, install_requires
from tests.eval.conftest import tiny_model_factory  # noqa: F401 (a fixture used below)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER_STAGE = "dataflow-worker"
IMAGE = "us-central1-docker.pkg.dev/my-project/bonify/bonify-worker@sha256:" + "0123abcd" * 8
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",
]
GS_PATHS = {"--input_dir": "gs://my-bucket/MURA", "--output_dir": "gs://my-bucket/shards"}


# --- the Dockerfile's worker stage -----------------------------------------------------------


def test_worker_stage_is_beams_sdk_image_of_the_launchers_python_and_beam():
    import apache_beam

    match = re.fullmatch(
        r"apache/beam_python(\d+)\.(\d+)_sdk:(\d+)\.(\d+)\.(\d+)", stage(WORKER_STAGE).base
    )
    assert match, stage(WORKER_STAGE).base
    # Dataflow runs the job's pickled code in the image: same Python minor, same Beam.
    assert (int(match[1]), int(match[2])) == sys.version_info[:2]
    (pin,) = [req for req in install_requires() if req.startswith("apache-beam==")]
    assert pin == f"apache-beam=={match[3]}.{match[4]}.*"
    assert apache_beam.__version__ == ".".join(match.group(3, 4, 5))


def test_worker_stage_starts_beams_boot():
    worker = stage(WORKER_STAGE)
    assert worker.exec_form("ENTRYPOINT") == ["/opt/apache/beam/boot"]
    assert worker.exec_form("CMD") is None  # boot's arguments come from Dataflow


def test_worker_stage_installs_the_package_on_the_images_own_beam():
    runs = stage(WORKER_STAGE).runs()
    install = re.search(r"pip install --no-cache-dir --constraint (\S+) \.(\s|$)", runs)
    assert install, runs
    assert any(req.startswith("tensorflow==") for req in install_requires())  # for RunInference
    # The constraint file pins the Beam release the image holds, before the install.
    assert re.search(
        rf"import apache_beam; print\('apache-beam==' \+ apache_beam.__version__\)\"? > {re.escape(install[1])}",
        runs,
    )
    assert "pip check" in runs
    # Imported from outside the source tree, i.e. from the installed package; TensorFlow is
    # there for the evaluator's RunInference mode.
    imports = re.search(r"cd / && python -c \"import ([^\"]+)\"", runs)
    assert imports and {"tensorflow", "beam_preprocess.pipeline", "eval.beam_inference"} <= {
        name.strip() for name in imports[1].split(",")
    }
    checked = set(re.findall(r"\b(bonify-[a-z]+) --help\b", runs))
    assert checked == {"bonify-preprocess", "bonify-eval"}
    assert checked <= set(console_scripts())


def test_default_build_target_is_still_the_stages_and_serving_image():
    """`docker build .` builds the last stage: the one k8s/ runs, not the worker image."""
    *_, last = stages()
    assert last.name != WORKER_STAGE
    assert last.base.startswith("tensorflow/tensorflow:")


def test_deploy_doc_runs_both_jobs_on_the_worker_image_it_builds_and_pushes():
    """docs/DEPLOY.md: the repository it creates, the registry docker logs in to, the image it
    builds from the worker stage, pushes and reads the digest of, and the image both Dataflow
    commands run (by digest) are one and the same."""
    commands = doc_commands()
    builds = [c for c in commands if c[:2] == ["docker", "build"] and "--target" in c]
    (built,) = [c[c.index("-t") + 1] for c in builds if c[c.index("--target") + 1] == WORKER_STAGE]
    repository = built.rpartition(":")[0]
    assert ["docker", "push", built] in commands
    described = [c for c in commands if c[:1] == ["gcloud"] and "describe" in c]
    inspected = [c for c in commands if c[:2] == ["docker", "buildx"]]
    assert described and inspected
    assert all(built in c for c in described + inspected)
    host, project, name, _ = repository.split("/")
    (created,) = [c for c in commands if c[:4] == ["gcloud", "artifacts", "repositories", "create"]]
    assert created[4] == name and f"--location={host.removesuffix('-docker.pkg.dev')}" in created
    assert ["gcloud", "auth", "configure-docker", host] in commands
    images = {
        c[2]: arg.split("=", 1)[1]
        for c in commands
        for arg in c
        if "--runner=DataflowRunner" in c and arg.startswith("--sdk_container_image=")
    }
    assert set(images) == {"beam_preprocess", "eval"}
    for image in images.values():
        assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", image), image
        check([f"--sdk_container_image={image}"])


# --- the checks of the worker-image flags ---------------------------------------------------


def check(flags: list[str], paths: dict[str, str] | None = None) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    check_dataflow_options(PipelineOptions([*DATAFLOW, *flags]), paths or GS_PATHS)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sdk_container_image=bonify-worker:1"], "--sdk_container_image bonify-worker:1 names no registry"),
        (["--sdk_container_image=bonify/worker@sha256:" + "ab" * 32], "names no registry"),
        (["--sdk_container_image=localhost:5000/bonify-worker:1"], "which Dataflow workers cannot reach"),
        (["--sdk_container_image=us-docker.pkg.dev/p/r/Bonify:1"], "is not a valid image reference"),
        (["--sdk_container_image=us-docker.pkg.dev/p/r/w:1 extra"], "is not a valid image reference"),
        (["--prebuild_sdk_container_engine=cloud_build", "--setup_file=./setup.py"],
         "--prebuild_sdk_container_engine=cloud_build needs --docker_registry_push_url"),
        (["--prebuild_sdk_container_engine=local_docker", "--setup_file=./setup.py"],
         "needs --docker_registry_push_url"),
        ([f"--sdk_container_image={IMAGE}", "--prebuild_sdk_container_engine=cloud_build",
          "--docker_registry_push_url=us-docker.pkg.dev/p/r"],
         "--sdk_container_image and --prebuild_sdk_container_engine: give one"),
        (["--prebuild_sdk_container_engine=cloud_build", "--docker_registry_push_url=bonify",
          "--setup_file=./setup.py"], "--docker_registry_push_url bonify names no registry"),
        ([f"--worker_harness_container_image={IMAGE}"], "--worker_harness_container_image is deprecated"),
        ([], "on Dataflow the workers need bonify"),
        (["--prebuild_sdk_container_engine=cloud_build", "--docker_registry_push_url=us-docker.pkg.dev/p/r"],
         "on Dataflow the workers need bonify"),
    ],
    ids=["no_registry", "docker_hub_implied", "localhost", "uppercase", "two_words",
         "cloud_build_no_push_url", "local_docker_no_push_url", "image_and_engine",
         "push_url_no_registry", "deprecated_flag", "nothing_gives_bonify", "prebuild_of_nothing"],
)  # fmt: skip
def test_worker_image_mistakes_are_one_line_naming_the_flag(flags, expected):
    with pytest.raises(BonifyError) as raised:
        check(flags)
    message = str(raised.value)
    assert expected in message and "\n" not in message, message


@pytest.mark.parametrize(
    "flags",
    [
        [f"--sdk_container_image={IMAGE}"],
        ["--sdk_container_image=us-central1-docker.pkg.dev/my-project/bonify/bonify-worker:0.1.0"],
        ["--sdk_container_image=docker.io/someone/bonify-worker:1"],
        ["--sdk_container_image=registry.example.com:5000/team/bonify_worker:v1.2"],
        ["--setup_file=./setup.py"],
        ["--prebuild_sdk_container_engine=cloud_build", "--setup_file=./setup.py",
         "--docker_registry_push_url=us-central1-docker.pkg.dev/my-project/bonify"],
    ],
    ids=["digest", "tag", "docker_hub_explicit", "registry_port", "setup_file", "prebuild"],
)  # fmt: skip
def test_usable_worker_setups_pass(flags, capsys):
    check(flags)
    assert capsys.readouterr().err == ""


def test_setup_file_with_the_image_is_a_one_line_warning(capsys):
    check([f"--sdk_container_image={IMAGE}", "--setup_file=./setup.py"])
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: --setup_file ./setup.py with --sdk_container_image")
    assert len(warning.splitlines()) == 1


def test_a_dry_run_needs_no_source_of_bonify():
    """A dry run builds the job here and starts no worker (as for the gs:// paths)."""
    check(["--dry_run=True"], {"--input_dir": "/local/MURA"})


def run_fresh(module: str, argv: list[str]) -> subprocess.CompletedProcess:
    """`module.main(argv)` in a new interpreter that then says whether TensorFlow got imported."""
    code = (
        "import sys\n"
        f"from {module} import main\n"
        f"code = main({argv!r})\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("program", "module", "paths"),
    [
        ("bonify-preprocess", "beam_preprocess.__main__",
         ["--input_dir", "gs://my-bucket/MURA", "--output_dir", "gs://my-bucket/shards"]),
        ("bonify-eval", "eval.__main__",
         ["--model", "gs://my-bucket/job/model/final.keras", "--data_dir", "gs://my-bucket/shards",
          "--output_dir", "gs://my-bucket/eval"]),
    ],
)  # fmt: skip
def test_both_commands_reject_an_image_without_registry_before_tensorflow(program, module, paths):
    result = run_fresh(module, [*paths, *DATAFLOW, "--sdk_container_image=bonify-worker:1"])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: error: --sdk_container_image bonify-worker:1")
    assert result.stdout.strip().endswith("tensorflow imported: False")


# --- dry runs: the built Dataflow job runs its workers on the image ---------------------------


@pytest.fixture
def built_jobs(monkeypatch) -> list:
    """Every Dataflow job (apiclient.Job) the runner builds during the test."""
    from apache_beam.runners.dataflow.internal import apiclient

    jobs = []

    class RecordedJob(apiclient.Job):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            jobs.append(self)

    monkeypatch.setattr(apiclient, "Job", RecordedJob)
    return jobs


def assert_workers_run_the_image(job) -> None:
    """The job's SDK environments, and the worker pool the Dataflow request would carry
    (rendered offline as the runner does after staging), all use IMAGE; nothing is staged
    for the workers to install (no sdist: Beam stages --setup_file's as workflow.tar.gz)."""
    from apache_beam.options.pipeline_options import WorkerOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.internal import apiclient

    assert job.options.view_as(WorkerOptions).sdk_container_image == IMAGE
    environments = job.proto_pipeline.components.environments.values()
    assert environments
    staged = set()
    for environment in environments:
        payload = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
        assert payload.container_image == IMAGE
        for dependency in environment.dependencies:
            role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dependency.role_payload
            )
            staged.add(role.staged_name)
    assert not {name for name in staged if name.endswith((".tar.gz", ".whl", ".zip"))}, staged
    rendered = apiclient.Environment(
        packages=[],
        options=job.options,
        environment_version="bonify-test",
        proto_pipeline_staged_url="gs://my-bucket/tmp/pipeline.pb",
        proto_pipeline=job.proto_pipeline,
    ).proto
    (pool,) = rendered.worker_pools
    assert pool.worker_harness_container_image == IMAGE
    assert {image.container_image for image in pool.sdk_harness_container_images} == {IMAGE}


def test_preprocess_dry_run_builds_a_job_on_the_worker_image(
    sample_dataset_dir, tmp_path, built_jobs, capsys
):
    from beam_preprocess.__main__ import main

    argv = ["--input_dir", str(sample_dataset_dir), "--output_dir", str(tmp_path / "out"),
            *DATAFLOW, f"--sdk_container_image={IMAGE}", "--dry_run=True"]  # fmt: skip
    assert main(argv) == 0
    output = capsys.readouterr()
    assert "dry run on DataflowRunner: job built" in output.out
    assert "warning" not in output.err
    (job,) = built_jobs
    assert_workers_run_the_image(job)
    assert not (tmp_path / "out").exists()


def test_eval_dry_run_builds_a_runinference_job_on_the_worker_image(
    tiny_model_factory,  # noqa: F811 (the fixture imported above)
    sample_shards_dir,
    tmp_path,
    built_jobs,
    capsys,
):
    from eval.__main__ import main

    model = tiny_model_factory(64)
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(tmp_path / "o"), *DATAFLOW, f"--sdk_container_image={IMAGE}",
            "--dry_run=True"]  # fmt: skip
    assert main(argv) == 0
    assert "dry run on DataflowRunner: job built" in capsys.readouterr().out
    (job,) = built_jobs
    assert_workers_run_the_image(job)
    transforms = job.proto_pipeline.components.transforms.values()
    assert any("RunInference" in transform.unique_name for transform in transforms)
