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


def render(overlay: pathlib.Path) -> list[dict]:
    """`kubectl kustomize overlay` as a list of objects."""
    kubectl = pathlib.Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    """Every object of every overlay, rendered by kubectl kustomize."""
    rendered = []
    for overlay in sorted((REPO_ROOT / "k8s" / "overlays").iterdir()):
        rendered += render(overlay)
    # Every overlay includes the base: keep one copy of each object.
    unique = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered}
    return list(unique.values())


def names(objects: list[dict], kind: str) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects if obj["kind"] == kind}


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

#: The API's routes (docs/SERVING.md) and the multipart field its /predict reads.
API_ROUTES = {"/healthz", "/model", "/predict"}
API_UPLOAD_FIELD = "files"
#: Kinds the serve overlay runs: deleted by name, never with `delete -k` (that takes the PVC).
SERVER_KINDS = {"deployment": "Deployment", "service": "Service"}


def port_forwards(objects: list[dict]) -> dict[int, str]:
    """Local port -> Service name, for every `kubectl port-forward service/...` in the doc."""
    forwards = {}
    for command in doc_commands():
        if command[:2] == ["kubectl", "port-forward"]:
            local = int(command[3].split(":")[0])
            forwards[local] = command[2].removeprefix("service/")
    return forwards


def check_gcloud(args: list[str], objects: list[dict]) -> None:
    """The Workload Identity binding (it must name the manifests' ServiceAccount), and the
    Artifact Registry steps of the Dataflow worker image (test_dataflow_image.py checks that
    they name the image the Dataflow commands run)."""
    if args[:3] == ["artifacts", "repositories", "create"]:
        assert "--repository-format=docker" in args, args
        return
    if args[:2] == ["auth", "configure-docker"]:
        assert len(args) == 3 and args[2].endswith("-docker.pkg.dev"), args
        return
    if args[:4] == ["artifacts", "docker", "images", "describe"]:
        assert args[5] == "--format=value(image_summary.digest)", args
        return
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
    elif verb == "delete" and args[1] == "job":
        assert set(arg for arg in args[2:] if arg != "--ignore-not-found") <= names(objects, "Job")
    elif verb == "delete":
        kinds = args[1].split(",")
        assert set(kinds) <= set(SERVER_KINDS), args
        for name in (arg for arg in args[2:] if arg != "--ignore-not-found"):
            for kind in kinds:
                assert name in names(objects, SERVER_KINDS[kind]), (args, kind, name)
    elif verb == "rollout":
        assert args[1] == "status", args
        kind, name = args[2].split("/")
        assert kind == "deployment" and name in names(objects, "Deployment"), args
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
    elif verb == "create":
        check_api_token_secret(args, objects)
    elif verb == "annotate":
        assert args[1] == "serviceaccount" and args[2] in names(objects, "ServiceAccount"), args
        assert args[3].startswith("iam.gke.io/gcp-service-account="), args
    else:
        raise AssertionError(f"unchecked kubectl command in docs/DEPLOY.md: {args}")


#: The file the doc writes the API token to (`openssl rand ... > api.token`).
API_TOKEN_FILE = "api.token"


def api_token_secret(objects: list[dict]) -> tuple[str, str]:
    """(Secret name, key) the API Deployment reads its token from."""
    (deployment,) = [
        obj
        for obj in objects
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "bonify-serve"
    ]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    (item,) = volume["secret"]["items"]
    return volume["secret"]["secretName"], item["key"]


def check_api_token_secret(args: list[str], objects: list[dict]) -> None:
    """`kubectl create secret generic NAME --from-file=KEY=api.token`: the Secret and key the
    API Deployment mounts, from the file the doc's openssl line writes."""
    name, key = api_token_secret(objects)
    assert args == ["create", "secret", "generic", name, f"--from-file={key}={API_TOKEN_FILE}"]


def check_openssl(args: list[str]) -> None:
    """The API token: at least 16 random bytes, hex, into API_TOKEN_FILE."""
    assert args[:2] == ["rand", "-hex"] and int(args[2]) >= 16, args
    assert args[3:] == [">", API_TOKEN_FILE], args


def check_curl(args: list[str], objects: list[dict]) -> None:
    """A call to the API through a port-forward the doc opens, on one of its routes; every
    route but /healthz with the bearer token of the doc's token file."""
    from urllib.parse import urlsplit

    (url,) = [arg for arg in args if arg.startswith("http")]
    parts = urlsplit(url)
    headers = [args[i + 1] for i, arg in enumerate(args) if arg == "-H"]
    if parts.path == "/healthz":
        assert headers == [], args
    else:
        assert headers == [f"Authorization: Bearer $(cat {API_TOKEN_FILE})"], args
    assert parts.hostname == "127.0.0.1", args
    assert port_forwards(objects).get(parts.port) == "bonify-serve", args
    assert parts.path in API_ROUTES, args
    uploads = [args[i + 1] for i, arg in enumerate(args) if arg == "-F"]
    assert all(upload.startswith(f"{API_UPLOAD_FIELD}=@") for upload in uploads), args
    if uploads or "--data-binary" in args:
        assert parts.path == "/predict", args
    assert parts.query in ("", "gradcam=true"), args


def check_docker(args: list[str]) -> None:
    """build (the default target, or a stage of the Dockerfile with its build args), push,
    and reading a pushed image's digest."""
    from tests.deploy.dockerfile import instructions, stages

    if args[0] == "build":
        assert args[-1] == "." and len(args) % 2 == 0, args
        options = dict(zip(args[1:-1:2], args[2:-1:2], strict=True))
        assert "-t" in options and set(options) <= {"-t", "--target", "--build-arg"}, args
        if "--target" in options:
            assert options["--target"] in {stage.name for stage in stages()}, args
        if "--build-arg" in options:
            declared = {arg.split("=")[0] for keyword, arg in instructions() if keyword == "ARG"}
            assert options["--build-arg"].split("=")[0] in declared, args
    elif args[0] == "push":
        assert len(args) == 2, args
    else:
        assert args[:3] == ["buildx", "imagetools", "inspect"], args
        assert args[4] == "--format={{.Manifest.Digest}}", args


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
        check_docker(args)
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
    elif program == "curl":
        check_curl(args, objects)
    elif program == "openssl":
        check_openssl(args)
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
    assert set(dataflow) == {"beam_preprocess", "eval"}
    for command in commands:
        if "--runner=DataflowRunner" in command:
            assert "--setup_file=./setup.py" in command or any(
                arg.startswith("--sdk_container_image=") for arg in command
            ), command


def test_cleanup_deletes_every_job_but_not_the_volume(objects):
    deletes = [command for command in doc_commands() if command[:2] == ["kubectl", "delete"]]
    assert all("-k" not in command and "pvc" not in command[2] for command in deletes)
    job_deletes = [command for command in deletes if command[2] == "job"]
    deleted = [[arg for arg in command[3:] if not arg.startswith("--")] for command in job_deletes]
    assert max(len(jobs) for jobs in deleted) == len(names(objects, "Job"))
    assert set().union(*deleted) == names(objects, "Job")


def test_cleanup_deletes_every_server_of_the_serve_overlay(objects):
    deletes = [
        command
        for command in doc_commands()
        if command[:2] == ["kubectl", "delete"] and command[2] != "job"
    ]
    deleted = {
        (SERVER_KINDS[kind], name)
        for command in deletes
        for kind in command[2].split(",")
        for name in command[3:]
        if not name.startswith("--")
    }
    # What k8s/overlays/serve adds to the shared resources (TensorBoard stays).
    overlays = REPO_ROOT / "k8s" / "overlays"
    shared = {(obj["kind"], obj["metadata"]["name"]) for obj in render(overlays / "shared")}
    servers = {(obj["kind"], obj["metadata"]["name"]) for obj in render(overlays / "serve")}
    assert servers - shared == {
        (kind, name) for kind in SERVER_KINDS.values() for name in SERVE_OVERLAY_NAMES
    }
    assert deleted == servers - shared


#: The servers k8s/overlays/serve runs (Deployment and Service each).
SERVE_OVERLAY_NAMES = {"bonify-serve", "bonify-app"}


def test_doc_shows_the_api_and_the_page_through_port_forward(objects):
    forwards = port_forwards(objects)
    assert sorted(forwards.values()) == sorted(SERVE_OVERLAY_NAMES | {"bonify-tensorboard"})
    commands = doc_commands()
    calls = [command for command in commands if command[0] == "curl"]
    paths = {url.split("8000", 1)[1].split("?")[0] for c in calls for url in c if "8000" in url}
    assert paths == API_ROUTES
