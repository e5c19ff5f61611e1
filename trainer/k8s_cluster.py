"""TF_CONFIG for MultiWorkerMirroredStrategy, derived from a Kubernetes Indexed Job's pod env.

An Indexed Job (`completionMode: Indexed`) gives each pod `JOB_COMPLETION_INDEX` (0..N-1)
and the hostname `<job-name>-<index>`; with `subdomain: <headless-service>` every pod
resolves as `<job-name>-<index>.<service>` (`.<namespace>.svc` appended when the namespace
is known). The multi-node manifest (k8s/overlays/multi-node-gpu) passes the rest as env:

| variable                       | meaning                                                        |
|--------------------------------|----------------------------------------------------------------|
| `JOB_COMPLETION_INDEX`         | this pod's index; set by Kubernetes                            |
| `BONIFY_NUM_WORKERS`           | N: the Job's `completions` (= `parallelism`)                   |
| `BONIFY_JOB_NAME`              | the Job's name (pod hostnames are `<job-name>-<index>`)        |
| `BONIFY_SERVICE`               | the headless Service's name (= the pods' `subdomain`)          |
| `BONIFY_NAMESPACE`             | optional; the pods' namespace (downward API)                   |
| `BONIFY_WORKER_PORT`           | the gRPC port every worker listens on, or a comma list of N    |
|                                | ports, one per index (for several workers on one host)         |
| `BONIFY_WORKER_ADDRESS_TEMPLATE` | optional; a `str.format` template for worker i's address, with |
|                                | `{hostname}`, `{service}`, `{namespace}`, `{index}`, `{port}`  |
| `HOSTNAME`                     | optional; when set (Kubernetes sets it) it must equal          |
|                                | `<job-name>-<index>`, which catches a wrong job name early     |

Worker 0 is the chief (task type "worker", index 0), as MultiWorkerMirroredStrategy expects.
To run the same code path on one machine without touching /etc/hosts, point the addresses
at loopback: `BONIFY_WORKER_ADDRESS_TEMPLATE='127.0.0.1:{port}'` and
`BONIFY_WORKER_PORT=P0,P1` (tests/deploy/test_multiworker_loopback.py does this).

Pure Python on purpose: no TensorFlow import, so it is cheap to test and to call before
any strategy exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from bonify.cli import BonifyError

INDEX_VAR = "JOB_COMPLETION_INDEX"
NUM_WORKERS_VAR = "BONIFY_NUM_WORKERS"
JOB_NAME_VAR = "BONIFY_JOB_NAME"
SERVICE_VAR = "BONIFY_SERVICE"
NAMESPACE_VAR = "BONIFY_NAMESPACE"
PORT_VAR = "BONIFY_WORKER_PORT"
ADDRESS_TEMPLATE_VAR = "BONIFY_WORKER_ADDRESS_TEMPLATE"
HOSTNAME_VAR = "HOSTNAME"

#: Every variable this module reads, for manifests and their tests.
ENV_VARS = (
    INDEX_VAR,
    NUM_WORKERS_VAR,
    JOB_NAME_VAR,
    SERVICE_VAR,
    NAMESPACE_VAR,
    PORT_VAR,
    ADDRESS_TEMPLATE_VAR,
    HOSTNAME_VAR,
)

#: Pod DNS names inside a headless Service's subdomain.
DEFAULT_ADDRESS_TEMPLATE = "{hostname}.{service}:{port}"
NAMESPACED_ADDRESS_TEMPLATE = "{hostname}.{service}.{namespace}.svc:{port}"

_TEMPLATE_FIELDS = ("hostname", "service", "namespace", "index", "port")


class ClusterConfigError(BonifyError, ValueError):
    """A missing or bad environment variable; the message names it."""


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ClusterConfigError(
            f"environment variable {name} is not set (see trainer/k8s_cluster.py)"
        )
    return value


def _non_negative_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ClusterConfigError(
            f"environment variable {name}={text!r} is not an integer"
        ) from None
    if value < 0:
        raise ClusterConfigError(f"environment variable {name}={text!r} must not be negative")
    return value


def _ports(text: str, num_workers: int) -> list[int]:
    """One port per worker index from `BONIFY_WORKER_PORT` (one port, or N comma-separated)."""
    parts = [part.strip() for part in text.split(",")]
    ports = [_non_negative_int(PORT_VAR, part) for part in parts]
    if any(not 0 < port < 65536 for port in ports):
        raise ClusterConfigError(f"environment variable {PORT_VAR}={text!r}: ports are 1-65535")
    if len(ports) == 1:
        return ports * num_workers
    if len(ports) != num_workers:
        raise ClusterConfigError(
            f"environment variable {PORT_VAR}={text!r} lists {len(ports)} ports "
            f"but {NUM_WORKERS_VAR}={num_workers}: give one port or one per worker"
        )
    return ports


def worker_addresses(environ: Mapping[str, str]) -> list[str]:
    """The `host:port` of every worker, index 0 (the chief) first."""
    num_workers = _non_negative_int(NUM_WORKERS_VAR, _required(environ, NUM_WORKERS_VAR))
    if num_workers < 1:
        raise ClusterConfigError(f"environment variable {NUM_WORKERS_VAR} must be at least 1")
    job_name = _required(environ, JOB_NAME_VAR)
    service = _required(environ, SERVICE_VAR)
    namespace = environ.get(NAMESPACE_VAR, "").strip()
    ports = _ports(_required(environ, PORT_VAR), num_workers)
    template = environ.get(ADDRESS_TEMPLATE_VAR, "").strip() or (
        NAMESPACED_ADDRESS_TEMPLATE if namespace else DEFAULT_ADDRESS_TEMPLATE
    )
    addresses = []
    for index in range(num_workers):
        fields = {
            "hostname": f"{job_name}-{index}",
            "service": service,
            "namespace": namespace,
            "index": index,
            "port": ports[index],
        }
        try:
            addresses.append(template.format(**fields))
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
            raise ClusterConfigError(
                f"environment variable {ADDRESS_TEMPLATE_VAR}={template!r} is not a valid "
                f"template ({error!r}); use the fields {', '.join(_TEMPLATE_FIELDS)}"
            ) from None
    if "{namespace}" in template and not namespace:
        raise ClusterConfigError(
            f"environment variable {ADDRESS_TEMPLATE_VAR} uses {{namespace}} but {NAMESPACE_VAR} is not set"
        )
    return addresses


def tf_config_from_environ(environ: Mapping[str, str]) -> dict:
    """The TF_CONFIG dict for this pod: `{"cluster": {"worker": [...]}, "task": {...}}`.

    Args:
        environ: the process environment (e.g. `os.environ`); see the module docstring for
            the variables read.

    Returns:
        A JSON-serialisable dict; worker 0 is the chief.

    Raises:
        ClusterConfigError: a variable is missing or bad (the message names it).
    """
    addresses = worker_addresses(environ)
    index = _non_negative_int(INDEX_VAR, _required(environ, INDEX_VAR))
    if index >= len(addresses):
        raise ClusterConfigError(
            f"environment variable {INDEX_VAR}={index} is out of range for "
            f"{NUM_WORKERS_VAR}={len(addresses)} (indices are 0..{len(addresses) - 1})"
        )
    hostname = environ.get(HOSTNAME_VAR, "").strip()
    expected_hostname = f"{environ[JOB_NAME_VAR].strip()}-{index}"
    if hostname and hostname != expected_hostname:
        raise ClusterConfigError(
            f"environment variable {HOSTNAME_VAR}={hostname!r} does not match "
            f"{JOB_NAME_VAR}-{INDEX_VAR} ({expected_hostname!r}): is {JOB_NAME_VAR} the Job's name?"
        )
    return {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
