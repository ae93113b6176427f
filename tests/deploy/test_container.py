"""The image of deploy/Dockerfile, run the way deploy/compose.yaml runs it.

The base image is built locally (deploy/podman-base.sh: debootstrap, cached),
then the image with podman. Each role of compose.yaml (migrate, api, worker,
sweeper) runs as a container with that service's command and env_file, on a
read-only root as the Kubernetes pods run. PostgreSQL and Redis are this
session's servers on the host, shared through the host network: no image
registry is reachable here for their images.

It skips, saying why, only where no container can run: no podman, or no base
image can be made. ``.ci/run`` installs podman, runc and debootstrap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tasks_core.devservers import EmbeddedPostgres, free_port
from tests.support.databases import create_database, drop_database
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE_IMAGE = "localhost/tasks-core-base:bookworm"
IMAGE = "localhost/tasks-core:test"
# Trusted by pip inside the build, for networks behind a TLS-intercepting proxy.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(Path(__file__).with_name("containers.conf"))}

# Building the dependency layer installs from PyPI the first time.
pytestmark = pytest.mark.timeout(900)


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; on failure with ``check``, fail showing its output."""
    done = subprocess.run(
        ["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {done.returncode}:\n{_tail(done)}")
    return done


def _tail(done: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((done.stdout + done.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def engine() -> None:
    """Skip, with the reason, where podman can not run containers."""
    if shutil.which("podman") is None:
        pytest.skip("no container engine: podman is not installed (.ci/run installs it)")
    info = podman("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman is installed but does not work here:\n{_tail(info, 10)}")


@pytest.fixture(scope="module")
def image(engine: None) -> str:
    """The image of deploy/Dockerfile, on a base built locally."""
    base = subprocess.run(
        ["bash", str(DEPLOY / "podman-base.sh")],
        env={**PODMAN_ENV, "BASE_IMAGE": BASE_IMAGE},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if base.returncode != 0:
        pytest.skip(f"no base image can be made here (deploy/podman-base.sh):\n{_tail(base, 10)}")
    build = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    if CA_BUNDLE.is_file():
        build += ["--secret", f"id=pip-ca,src={CA_BUNDLE}"]
    podman(*build, "-f", str(DEPLOY / "Dockerfile"), "-t", IMAGE, str(ROOT), timeout=600)
    return IMAGE


def compose_service(name: str) -> dict[str, Any]:
    """A service of deploy/compose.yaml."""
    services: dict[str, dict[str, Any]] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())[
        "services"
    ]
    return services[name]


class System:
    """The roles of compose.yaml as containers of one test, removed after it."""

    def __init__(self, image: str, env: dict[str, str]) -> None:
        self.image = image
        self.env = env
        self.suffix = uuid.uuid4().hex[:8]
        self.names: list[str] = []

    def _args(self, service: str) -> list[str]:
        env_file = DEPLOY / compose_service(service)["env_file"]
        args = ["--network", "host", "--read-only", "--tmpfs", "/tmp", "--env-file", str(env_file)]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        return args

    def run(self, service: str, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a one-off container of ``service`` (its command, or ``command``) to its end."""
        argv = list(command) or compose_service(service)["command"]
        return podman("run", "--rm", *self._args(service), self.image, *argv, timeout=180)

    def start(self, service: str, command: list[str]) -> str:
        """Start ``service`` in the background, with ``command``; its container's name."""
        name = f"tasks-test-{service}-{self.suffix}"
        podman("run", "-d", "--name", name, *self._args(service), self.image, *command)
        self.names.append(name)
        return name

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{_tail(podman('logs', name, check=False), 30)}" for name in self.names
        )

    def remove(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "5", name, check=False)


@pytest.fixture
def empty_database(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """An empty database, for the image's own `migrate` to make."""
    name = f"deploy_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.url, name)
    yield pg_server.url_for(name)
    drop_database(pg_server.url, name)


@pytest.fixture
def system(image: str, empty_database: str, redis_url: str) -> Iterator[System]:
    started = System(image, {"DATABASE_URL": empty_database, "REDIS_URL": redis_url})
    try:
        yield started
    finally:
        started.remove()


def api_command(port: int) -> list[str]:
    """compose.yaml's api command, on ``port`` (the host network is shared)."""
    command: list[str] = list(compose_service("api")["command"])
    command[command.index("--port") + 1] = str(port)
    return command


def test_the_image_runs_a_task_through_the_compose_roles(system: System) -> None:
    migrated = system.run("migrate")
    assert "schema is up to date" in migrated.stdout

    port = free_port()
    api = system.start("api", api_command(port))
    worker = system.start("worker", compose_service("worker")["command"])
    sweeper = system.start("sweeper", compose_service("sweeper")["command"])

    issued = system.run("api", "keys", "create", "--org", "deploy-test")
    key = issued.stdout.strip().splitlines()[-1]
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        try:
            wait_until(healthy, timeout=60, interval=0.2, message="the api container answers")
            body = {"kind": "CallAction", "targetId": "builtin/echo", "input": {"hello": "image"}}
            created = client.post("/v1/tasks", json=body)
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]

            def finished() -> dict[str, Any]:
                task: dict[str, Any] = client.get(f"/v1/tasks/{task_id}").json()
                return task if task["status"] in {"completed", "failed", "cancelled"} else {}

            task = wait_until(finished, timeout=60, interval=0.1, message="the task ends")
            workers = client.get("/v1/workers").json()["items"]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{system.logs()}") from exc

    assert task["status"] == "completed", task
    assert task["output"] == {"hello": "image"}
    assert task["startedAt"] and task["endedAt"]
    assert [w["alive"] for w in workers] == [True], workers

    # Each role stops on SIGTERM within compose's grace, without being killed.
    for name in (api, worker, sweeper):
        podman("stop", "--time", "40", name, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", f"{name} exited {code} on SIGTERM\n{system.logs()}"
