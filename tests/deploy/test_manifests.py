"""The deployment files: k8s/ overlays (rendered, schema-validated, project checks) and the Dockerfile."""

from __future__ import annotations

import ast
import copy
import dataclasses
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import unittest.mock

import pytest
import setuptools
import yaml

from trainer import k8s_cluster
from trainer.k8s_cluster import tf_config_from_environ

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
OVERLAYS = ("shared", "single-node-gpu", "multi-node-gpu", "preprocess", "evaluate", "serve")
#: Overlays without a Job: the shared resources alone, and the long-running model servers.
OVERLAYS_WITHOUT_JOB = ("shared", "serve")
#: The oldest Kubernetes version the manifests need (Indexed Job pod hostnames, the
#: batch.kubernetes.io/job-name label and podFailurePolicy are all GA by then).
KUBERNETES_VERSION = "1.33.0"
#: Validated against the oldest supported and the newest schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = (KUBERNETES_VERSION, "1.37.0")
SHARED_MOUNT = "/mnt/bonify"
POD_OWNER_KINDS = ("Job", "Deployment")


def venv_tool(name: str) -> str:
    """A console tool installed next to this Python (the venv's bin), e.g. kubectl."""
    path = pathlib.Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: pip install -e '.[test]'")
    return str(path)


def render(overlay_dir: pathlib.Path) -> list[dict]:
    """`kubectl kustomize overlay_dir` as a list of objects."""
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", str(overlay_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of `kind` (and `name`, if given)."""
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    """(owner name, pod spec) of every pod template."""
    return [
        (obj["metadata"]["name"], obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in POD_OWNER_KINDS
    ]


def env_of(container: dict) -> dict[str, dict]:
    """The container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def console_scripts() -> dict[str, str]:
    """setup.py's console_scripts, name -> "module:function", read without running setup.py."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = ast.literal_eval(value)
                    return dict(entry.replace(" ", "").split("=", 1) for entry in entries)
    raise AssertionError("setup.py has no console_scripts")


def setup_constant(name: str):
    """A module-level constant of setup.py, from running the file with setuptools' setup()
    replaced by a no-op (the constants may be built from each other)."""
    with unittest.mock.patch.object(setuptools, "setup", lambda **kwargs: None):
        namespace = runpy.run_path(str(REPO_ROOT / "setup.py"))
    assert name in namespace, f"setup.py has no {name}"
    return namespace[name]


def install_requires() -> list[str]:
    """setup.py's INSTALL_REQUIRES list."""
    return setup_constant("INSTALL_REQUIRES")


def extras_require() -> dict[str, list[str]]:
    """setup.py's EXTRAS_REQUIRE, extra name -> requirements."""
    return setup_constant("EXTRAS_REQUIRE")


# --- Kubernetes manifests -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    """Every overlay rendered by `kubectl kustomize`, by overlay name."""
    return {overlay: render(K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


def all_pod_specs(rendered) -> list[tuple[str, dict]]:
    specs = {}
    for objects in rendered.values():
        for name, spec in pod_specs(objects):
            specs[name] = spec
    return sorted(specs.items())


def trainer_pod_specs(rendered) -> list[tuple[str, dict]]:
    return [
        (name, spec)
        for name, spec in all_pod_specs(rendered)
        if spec["containers"][0]["command"] == ["bonify-train"]
    ]


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
def test_every_overlay_renders_and_passes_strict_schema_validation(
    rendered, tmp_path, kubernetes_version
):
    files = []
    for overlay, objects in rendered.items():
        # Each stage overlay runs a Job; "shared" is the shared resources alone and
        # "serve" the long-running API and app.
        assert bool(find(objects, "Job")) == (overlay not in OVERLAYS_WITHOUT_JOB), overlay
        assert find(objects, "PersistentVolumeClaim", "bonify-storage"), overlay
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        files.append(str(path))
    result = subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "-k", kubernetes_version, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout


def test_strict_validation_rejects_a_misspelled_field(rendered, tmp_path):
    """Control: the validator really checks fields, so the test above means something."""
    job = copy.deepcopy(find(rendered["single-node-gpu"], "Job")[0])
    job["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 300
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_every_pod_runs_locked_down(rendered):
    specs = all_pod_specs(rendered)
    assert {name for name, _ in specs} >= {
        "bonify-tensorboard",
        "bonify-train",
        "bonify-train-single",
        "bonify-preprocess",
        "bonify-eval",
        "bonify-serve",
        "bonify-app",
    }
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            # A read-only root needs a writable /tmp, and HOME must point into it.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert env_of(container)["HOME"]["value"].startswith("/tmp/"), name
            # Every path a library writes to (HOME, caches, matplotlib, Keras) is writable.
            for var, entry in env_of(container).items():
                value = entry.get("value", "")
                if value.startswith("/") and var in WRITABLE_PATH_VARS:
                    writable = [path for path, volume in mounts.items()
                                if value.startswith(path.rstrip("/") + "/") or value == path]  # fmt: skip
                    assert writable, (name, var, value)
                    mount = max(writable, key=len)
                    assert "configMap" not in volumes[mounts[mount]], (name, var)
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        if "fsGroup" in spec["securityContext"]:
            assert spec["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch", name


#: Environment variables naming a directory a library writes into.
WRITABLE_PATH_VARS = {"HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "KERAS_HOME", "TMPDIR"}


def image_of_the_component() -> str:
    """newName:newTag of k8s/components/image, the one place the image is named."""
    component = yaml.safe_load(
        (K8S_DIR / "components" / "image" / "kustomization.yaml").read_text()
    )
    (image,) = component["images"]
    return f"{image['newName']}:{image['newTag']}"


def test_every_container_of_every_overlay_runs_the_pushed_image(rendered):
    image = image_of_the_component()
    for overlay, objects in rendered.items():
        for name, spec in pod_specs(objects):
            for container in spec["containers"]:
                assert container["image"] == image, (overlay, name, container["image"])
    doc = (REPO_ROOT / "docs" / "DEPLOY.md").read_text()
    assert f"docker build -t {image} ." in doc and f"docker push {image}" in doc


def test_no_credentials_inline(rendered):
    for objects in rendered.values():
        assert not find(objects, "Secret")
        for name, spec in pod_specs(objects):
            for container in spec["containers"]:
                for var, entry in env_of(container).items():
                    if re.search(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", var):
                        assert "value" not in entry, (name, var)


def test_trainer_pods_have_gpu_limits_and_a_long_grace_period(rendered):
    trainers = trainer_pod_specs(rendered)
    assert {name for name, _ in trainers} == {"bonify-train", "bonify-train-single"}
    for name, spec in trainers:
        resources = spec["containers"][0]["resources"]
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1, name
        # Time for the SIGTERM checkpoint (the step in flight, then a save).
        assert spec["terminationGracePeriodSeconds"] >= 120, name


def test_shared_volume_is_mounted_in_every_trainer_tensorboard_and_preprocess_pod(rendered):
    for overlay, objects in rendered.items():
        (claim,) = find(objects, "PersistentVolumeClaim")
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        for name, spec in pod_specs(objects):
            volumes = {
                volume["name"]
                for volume in spec["volumes"]
                if volume.get("persistentVolumeClaim", {}).get("claimName")
                == claim["metadata"]["name"]
            }
            mounts = [
                mount
                for mount in spec["containers"][0]["volumeMounts"]
                if mount["name"] in volumes and mount["mountPath"] == SHARED_MOUNT
            ]
            assert len(mounts) == 1, (overlay, name)
            args = " ".join(spec["containers"][0].get("args", []))
            for path in re.findall(r"(?:_dir[= ]|--logdir )(\S+)", args):
                assert path.startswith(SHARED_MOUNT + "/"), (overlay, name, path)


def test_tensorboard_service_reaches_the_deployment(rendered):
    objects = rendered["preprocess"]
    (service,) = find(objects, "Service", "bonify-tensorboard")
    (deployment,) = find(objects, "Deployment", "bonify-tensorboard")
    assert service["spec"]["type"] == "ClusterIP"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tensorboard"]
    port = int(container["args"][container["args"].index("--port") + 1])
    assert container["ports"][0]["containerPort"] == port
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


#: The serve overlay's Deployments: name -> (port, readiness/liveness path).
SERVERS = {"bonify-serve": (8000, "/healthz"), "bonify-app": (8501, "/_stcore/health")}


def server_container(objects: list[dict], name: str) -> tuple[dict, dict]:
    (deployment,) = find(objects, "Deployment", name)
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_serve_overlay_service_reaches_its_deployment_on_the_served_port(rendered, name):
    objects = rendered["serve"]
    deployment, container = server_container(objects, name)
    (service,) = find(objects, "Service", name)
    assert service["spec"]["type"] == "ClusterIP"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    port, _ = SERVERS[name]
    assert f"--port={port}" in container["args"]
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_serve_overlay_probes_the_servers_health_endpoint(rendered, name):
    _, container = server_container(rendered["serve"], name)
    _, path = SERVERS[name]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Liveness must not kill a pod that is still loading its model.
    liveness = container["livenessProbe"]
    startup = container.get("startupProbe")
    assert startup or liveness.get("initialDelaySeconds", 0) >= 30
    if startup:
        assert startup["httpGet"] == {"path": path, "port": "http"}
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_serve_overlay_reads_one_job_dir_from_the_shared_volume_read_only(rendered):
    models = set()
    for name in SERVERS:
        deployment, container = server_container(rendered["serve"], name)
        spec = deployment["spec"]["template"]["spec"]
        (model_arg,) = [arg for arg in container["args"] if arg.startswith("--model=")]
        model = model_arg.split("=", 1)[1]
        assert model.startswith(f"{SHARED_MOUNT}/jobs/"), (name, model)
        claims = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        for mount in container["volumeMounts"]:
            if mount["name"] in claims:
                assert mount.get("readOnly") is True, (name, mount)
        models.add(model)
    # The API and the page answer with the same model.
    assert len(models) == 1, models


#: The Secret holding the API token: created by `kubectl create secret` (docs/DEPLOY.md),
#: never part of the repository or of a rendered overlay.
API_TOKEN_SECRET = "bonify-api-token"


def api_token_volume(rendered) -> tuple[dict, dict, str]:
    """(the Secret volume, its mount, the --token_file argument) of the API Deployment."""
    deployment, container = server_container(rendered["serve"], "bonify-serve")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    (token_arg,) = [arg for arg in container["args"] if arg.startswith("--token_file=")]
    return volume, mount, token_arg.split("=", 1)[1]


def test_serve_api_reads_its_token_from_a_secret_the_repository_does_not_contain(rendered):
    volume, mount, token_file = api_token_volume(rendered)
    secret = volume["secret"]
    assert secret["secretName"] == API_TOKEN_SECRET
    # Not optional: without the Secret the pod does not start.
    assert secret.get("optional", False) is False
    (item,) = secret["items"]
    assert mount["readOnly"] is True
    assert token_file == f"{mount['mountPath']}/{item['path']}"
    # Readable by the pod's group (fsGroup), not by others.
    deployment, _ = server_container(rendered["serve"], "bonify-serve")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    assert secret["defaultMode"] & 0o040 and not secret["defaultMode"] & 0o007
    for objects in rendered.values():
        assert not find(objects, "Secret", API_TOKEN_SECRET)
    # The page has no use for the API's token.
    app, _ = server_container(rendered["serve"], "bonify-app")
    assert not [v for v in app["spec"]["template"]["spec"]["volumes"] if "secret" in v]


def test_serve_api_without_its_token_refuses_to_start(rendered, tmp_path, monkeypatch):
    """The manifest's command line minus --token_file (and no BONIFY_API_TOKEN) is refused
    by bonify-serve's own check; with a token file it passes; --no_auth is never set."""
    from serve.api import ServeArgumentError, ServeOptions, build_parser, check_access

    monkeypatch.delenv("BONIFY_API_TOKEN", raising=False)
    _, container = server_container(rendered["serve"], "bonify-serve")
    parsed = build_parser().parse_args(container["args"])
    assert parsed.no_auth is False
    options = ServeOptions(models=tuple(parsed.model), host=parsed.host, port=parsed.port)
    with pytest.raises(ServeArgumentError, match="without a token"):
        check_access(options)
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    check_access(dataclasses.replace(options, token_file=str(token)))


def test_trainer_config_is_the_shipped_config_mounted_where_the_trainer_reads_it(rendered):
    shipped = REPO_ROOT / "trainer" / "configs" / "mura_densenet169.yaml"
    copy_in_base = K8S_DIR / "base" / "mura_densenet169.yaml"
    assert copy_in_base.read_text() == shipped.read_text(), (
        "k8s/base/mura_densenet169.yaml differs from trainer/configs/: "
        "cp trainer/configs/mura_densenet169.yaml k8s/base/"
    )
    for name, spec in trainer_pod_specs(rendered):
        objects = rendered["single-node-gpu" if name.endswith("single") else "multi-node-gpu"]
        container = spec["containers"][0]
        config_arg = next(arg for arg in container["args"] if arg.startswith("--config="))
        config_path = pathlib.PurePosixPath(config_arg.split("=", 1)[1])
        mount = next(
            m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)
        )
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        (config_map,) = find(objects, "ConfigMap", volume["configMap"]["name"])
        assert config_map["data"][config_path.name] == shipped.read_text()


def multi_node_job(objects: list[dict]) -> tuple[dict, dict, dict]:
    (job,) = find(objects, "Job")
    (service,) = find(objects, "Service", "bonify-workers")
    return job, service, job["spec"]["template"]["spec"]["containers"][0]


def test_multi_node_job_is_indexed_with_all_workers_at_once(rendered):
    job, _, container = multi_node_job(rendered["multi-node-gpu"])
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert env_of(container)["BONIFY_NUM_WORKERS"]["value"] == str(spec["completions"])
    assert "--tf_config_from_k8s" in container["args"]
    assert "--strategy=multi_worker" in container["args"]
    # A failed worker restarts in place (same pod hostname), so the group re-forms.
    assert spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    # An evicted pod's replacement waits for it to terminate: one pod per index at a time.
    assert spec["podReplacementPolicy"] == "Failed"


def test_headless_service_name_is_the_pod_subdomain_and_selects_the_workers(rendered):
    job, service, container = multi_node_job(rendered["multi-node-gpu"])
    pod = job["spec"]["template"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert env_of(container)["BONIFY_SERVICE"]["value"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = int(env_of(container)["BONIFY_WORKER_PORT"]["value"])
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["ports"][0]["targetPort"] == container_port["name"]


def kubernetes_pod_env(job: dict, container: dict, index: int, namespace: str) -> dict[str, str]:
    """The env a pod of this Indexed Job gets from Kubernetes: literal values, the downward
    API fields the manifest uses, JOB_COMPLETION_INDEX and HOSTNAME."""
    job_name = job["metadata"]["name"]
    # What the Job controller and the API server fill in for each pod.
    fields = {
        "metadata.labels['batch.kubernetes.io/job-name']": job_name,
        "metadata.namespace": namespace,
    }
    env = {"JOB_COMPLETION_INDEX": str(index), "HOSTNAME": f"{job_name}-{index}"}
    for name, entry in env_of(container).items():
        if "value" in entry:
            env[name] = entry["value"]
        else:
            env[name] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_tf_config_from_the_rendered_pod_env_names_every_pod_dns_name(rendered):
    job, service, container = multi_node_job(rendered["multi-node-gpu"])
    workers = job["spec"]["completions"]
    port = container["ports"][0]["containerPort"]
    expected = [
        f"{job['metadata']['name']}-{i}.{service['metadata']['name']}.team-a.svc:{port}"
        for i in range(workers)
    ]
    for index in range(workers):
        config = tf_config_from_environ(kubernetes_pod_env(job, container, index, "team-a"))
        assert config == {
            "cluster": {"worker": expected},
            "task": {"type": "worker", "index": index},
        }
    assert set(env_of(container)) - {"HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME", "KERAS_HOME"} <= set(
        k8s_cluster.ENV_VARS
    )


def test_scaling_the_worker_count_is_one_edit(tmp_path):
    """Changing `completions` carries over to parallelism and BONIFY_NUM_WORKERS."""
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    job_file = tmp_path / "k8s" / "overlays" / "multi-node-gpu" / "train-job.yaml"
    text = job_file.read_text()
    assert text.count("completions: 2\n") == 1
    job_file.write_text(text.replace("completions: 2\n", "completions: 5\n"))
    job, _, container = multi_node_job(render(tmp_path / "k8s" / "overlays" / "multi-node-gpu"))
    assert job["spec"]["parallelism"] == 5
    assert env_of(container)["BONIFY_NUM_WORKERS"]["value"] == "5"
    config = tf_config_from_environ(kubernetes_pod_env(job, container, 4, "default"))
    assert len(config["cluster"]["worker"]) == 5


def test_every_command_the_manifests_run_is_a_console_script(rendered):
    scripts = console_scripts()
    commands = {
        spec["containers"][0]["command"][0]
        for objects in rendered.values()
        for _, spec in pod_specs(objects)
    }
    assert commands == {
        "bonify-train",
        "bonify-preprocess",
        "bonify-eval",
        "bonify-serve",
        "bonify-app",
        "tensorboard",
    }
    assert commands - {"tensorboard"} <= set(scripts)
    # tensorboard comes from a pinned dependency, not from this package.
    assert any(req.startswith("tensorboard==") for req in install_requires())


def test_every_stage_command_line_in_the_manifests_parses(rendered):
    """The args the pods pass are accepted by each stage's own parser (no typo'd flag)."""
    from beam_preprocess.options import parse_args as parse_preprocess_args
    from eval.options import parse_args as parse_eval_args
    from trainer.__main__ import parse_args as parse_train_args

    parsers = {
        "bonify-preprocess": parse_preprocess_args,
        "bonify-train": parse_train_args,
        "bonify-eval": parse_eval_args,
    }
    seen = set()
    for _, spec in all_pod_specs(rendered):
        container = spec["containers"][0]
        command = container["command"][0]
        if command in parsers:
            parsers[command](container["args"])
            seen.add(command)
    assert seen == set(parsers)


def test_serve_and_app_command_lines_in_the_manifests_parse(rendered):
    """The servers' args are accepted by their own parsers (the console script's module's
    build_parser; parsing checks flags only, not that the model exists here)."""
    import importlib

    scripts = console_scripts()
    for name in ("bonify-serve", "bonify-app"):
        (deployment,) = find(rendered["serve"], "Deployment", name)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [name]
        module = importlib.import_module(scripts[name].split(":")[0])
        options = module.build_parser().parse_args(container["args"])
        assert options.host == "0.0.0.0", name  # reachable through the Service
        assert int(options.port) == container["ports"][0]["containerPort"], name


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage: the default build target, the
    image the manifests run (the Dataflow worker stage: tests/deploy/test_dataflow_image.py)."""
    from tests.deploy.dockerfile import stages

    return list(stages()[-1].instructions)


def test_dockerfile_base_image_has_the_pinned_tensorflow():
    (base,) = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    match = re.fullmatch(r"tensorflow/tensorflow:(\d+)\.(\d+)\.\d+-gpu", base)
    assert match, base
    (pin,) = [req for req in install_requires() if req.startswith("tensorflow==")]
    assert pin == f"tensorflow=={match[1]}.{match[2]}.*"


def test_dockerfile_installs_this_package_and_runs_as_the_manifests_user(rendered):
    instructions = dockerfile_instructions()
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(r"pip install [^&]*--no-cache-dir[^&]* \"?\.(\[[a-z,]+\])?\"?(\s|$)", runs), (
        runs
    )
    users = [args for keyword, args in instructions if keyword == "USER"]
    uid = int(users[-1].split(":")[0])
    assert uid != 0
    for _, spec in all_pod_specs(rendered):
        assert spec["securityContext"]["runAsUser"] == uid


def test_dockerfile_entrypoints_are_console_scripts():
    """The image build runs each stage's command once (`--help`), so a broken install or
    entry point fails `docker build` (RUN instructions only; comments do not count)."""
    scripts = console_scripts()
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    checked = set(re.findall(r"\b(bonify-[a-z]+) --help\b", runs))
    assert checked == {
        "bonify-preprocess",
        "bonify-train",
        "bonify-eval",
        "bonify-predict",
        "bonify-serve",
        "bonify-app",
    }
    assert checked <= set(scripts)


def dockerfile_installed_extras() -> set[str]:
    """The extras of this package the image installs (`pip install ".[a,b]"`)."""
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    (extras,) = re.findall(r"pip install [^&]*--no-cache-dir[^&]* \"?\.(?:\[([a-z,]+)\])?\"?", runs)
    return set(filter(None, extras.split(",")))


def test_dockerfile_installs_the_web_stack_of_the_api_and_the_app():
    """Streamlit, FastAPI and uvicorn, as pinned in setup.py, are in the image, so one image
    runs bonify-serve and bonify-app too; the test-only packages are not."""
    installed = dockerfile_installed_extras()
    assert "app" in installed
    assert "test" not in installed
    requirements = install_requires() + [
        req for extra in installed for req in extras_require()[extra]
    ]
    names = {re.split(r"[<>=\[ ]", req, maxsplit=1)[0].lower() for req in requirements}
    assert {"streamlit", "fastapi", "uvicorn"} <= names, sorted(names)


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "demo_output"} <= set(ignored)
