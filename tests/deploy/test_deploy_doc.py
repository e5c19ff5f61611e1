"""Every command in docs/DEPLOY.md's `sh` blocks refers to things that exist and parses.

No cluster, registry or GCP project is reachable here, so each command is checked against
what it would act on: overlays and object names in the rendered manifests, files in the
repo, and each stage's own argument parser. A command this test does not know fails it.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "DEPLOY.md"


def doc_commands() -> list[list[str]]:
    """The commands of the doc's ```sh blocks, one token list each."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [
        shlex.split(line)
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    """Every object of every overlay, rendered by kubectl kustomize."""
    kubectl = pathlib.Path(sys.executable).parent / "kubectl"
    rendered = []
    for overlay in sorted((REPO_ROOT / "k8s" / "overlays").iterdir()):
        result = subprocess.run(
            [str(kubectl), "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        rendered += [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    # Every overlay includes the base: keep one copy of each object.
    unique = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered}
    return list(unique.values())


def names(objects: list[dict], kind: str) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects if obj["kind"] == kind}


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def check_gcloud(args: list[str], objects: list[dict]) -> None:
    """Only the Workload Identity binding: it must name the manifests' ServiceAccount."""
    assert args[:3] == ["iam", "service-accounts", "add-iam-policy-binding"], args
    options = dict(arg.removeprefix("--").split("=", 1) for arg in args[4:])
    assert options["role"] == "roles/iam.workloadIdentityUser", args
    member = re.fullmatch(
        r"serviceAccount:[^.]+\.svc\.id\.goog\[(\w+)/([\w-]+)\]", options["member"]
    )
    assert member and member[2] in names(objects, "ServiceAccount"), args


def check_kubectl(args: list[str], objects: list[dict]) -> None:
    verb = args[0]
    if verb == "apply":
        assert args[1] == "-k" and len(args) == 3, args
        assert (REPO_ROOT / args[2] / "kustomization.yaml").exists(), args
        assert args[2].startswith("k8s/overlays/"), args
    elif verb == "logs" and "-l" in args:
        # Pods of one Job index, by the labels the Job controller puts on its pods.
        labels = dict(pair.split("=") for pair in args[args.index("-l") + 1].split(","))
        assert labels.keys() == {JOB_NAME_LABEL, "batch.kubernetes.io/job-completion-index"}
        (job,) = [obj for obj in objects if obj["kind"] == "Job"
                  and obj["metadata"]["name"] == labels[JOB_NAME_LABEL]]  # fmt: skip
        assert job["spec"]["completionMode"] == "Indexed", args
        assert int(labels["batch.kubernetes.io/job-completion-index"]) == 0  # the chief
    elif verb in ("wait", "logs"):
        (target,) = [arg for arg in args[1:] if arg.startswith("job/")]
        assert target.removeprefix("job/") in names(objects, "Job"), args
    elif verb == "delete":
        assert args[1] == "job", args
        assert set(arg for arg in args[2:] if arg != "--ignore-not-found") <= names(objects, "Job")
    elif verb == "get":
        label = args[args.index("-l") + 1]
        key, value = label.split("=")
        labels = [
            obj["spec"]["template"]["metadata"]["labels"] for obj in objects if obj["kind"] == "Job"
        ]
        assert any(found.get(key) == value for found in labels), args
    elif verb == "port-forward":
        kind, name = args[1].split("/")
        assert kind == "service"
        (service,) = [
            obj for obj in objects if obj["kind"] == "Service" and obj["metadata"]["name"] == name
        ]
        remote = int(args[2].split(":")[1])
        assert remote in {port["port"] for port in service["spec"]["ports"]}, args
    elif verb == "annotate":
        assert args[1] == "serviceaccount" and args[2] in names(objects, "ServiceAccount"), args
        assert args[3].startswith("iam.gke.io/gcp-service-account="), args
    else:
        raise AssertionError(f"unchecked kubectl command in docs/DEPLOY.md: {args}")


def check_command(command: list[str], objects: list[dict]) -> None:
    from beam_preprocess.options import beam_options, validate_dataflow
    from beam_preprocess.options import parse_args as parse_preprocess_args
    from eval.options import parse_args as parse_eval_args
    from trainer.__main__ import parse_args as parse_train_args

    program, args = command[0], command[1:]
    if program == "kubectl":
        check_kubectl(args, objects)
    elif program == "gcloud":
        check_gcloud(args, objects)
    elif program == "docker":
        assert args[0] in ("build", "push"), command
        if args[0] == "build":
            assert args[1] == "-t" and args[3] == "." and (REPO_ROOT / "Dockerfile").exists()
    elif program == "cp":
        source, target = args
        assert (REPO_ROOT / source).is_file() and (REPO_ROOT / target).is_dir(), command
        assert (REPO_ROOT / target / pathlib.Path(source).name).read_text() == (
            REPO_ROOT / source
        ).read_text()
    elif command[:3] == ["python", "-m", "beam_preprocess"]:
        config, beam_args = parse_preprocess_args(command[3:])
        # The same checks the job makes before it starts (flags, Dataflow options).
        validate_dataflow(config, beam_options(beam_args))
    elif command[:3] == ["python", "-m", "eval"]:
        parse_eval_args(command[3:])
    elif program == "bonify-train":
        parse_train_args(args)
        (job,) = [
            obj
            for obj in objects
            if obj["kind"] == "Job" and obj["metadata"]["name"] == "bonify-train"
        ]
        assert args == job["spec"]["template"]["spec"]["containers"][0]["args"]
    elif program == "tensorboard":
        assert args[args.index("--host") + 1] == "127.0.0.1"
        assert args[args.index("--logdir") + 1].endswith("/tensorboard")
        int(args[args.index("--port") + 1])
    else:
        raise AssertionError(f"unchecked command in docs/DEPLOY.md: {command}")


def test_every_doc_command_is_checked_and_valid(objects):
    commands = doc_commands()
    assert len(commands) >= 15
    for command in commands:
        check_command(command, objects)


def test_doc_covers_every_overlay_and_both_dataflow_commands():
    commands = doc_commands()
    applied = {command[3] for command in commands if command[:3] == ["kubectl", "apply", "-k"]}
    overlays = {f"k8s/overlays/{path.name}" for path in (REPO_ROOT / "k8s" / "overlays").iterdir()}
    assert applied == overlays
    dataflow = [command[2] for command in commands if "--runner=DataflowRunner" in command]
    assert sorted(dataflow) == ["beam_preprocess", "eval"]
    for command in commands:
        if "--runner=DataflowRunner" in command:
            assert "--setup_file=./setup.py" in command


def test_cleanup_deletes_every_job_but_not_the_volume(objects):
    deletes = [command for command in doc_commands() if command[:2] == ["kubectl", "delete"]]
    assert all(command[2] == "job" for command in deletes)
    deleted = [[arg for arg in command[3:] if not arg.startswith("--")] for command in deletes]
    assert max(len(jobs) for jobs in deleted) == len(names(objects, "Job"))
    assert set().union(*deleted) == names(objects, "Job")
