"""The Kubernetes manifests in deploy/k8s, checked offline (no cluster).

- Built-in kinds against the Kubernetes OpenAPI schemas that
  ``kubernetes-validate`` ships, in strict mode (an unknown field is an error).
- KEDA ScaledObjects against the vendored CRD schema (``schemas/``), tightened
  so that a misspelt field is an error there too.
- Each ScaledObject against the worker Deployment it scales: every redis
  trigger watches a queue the pool's ``tasks-core worker`` arguments consume,
  one trigger per queue, with metadata keys KEDA's redis scaler knows and an
  address KEDA can resolve from the pool's container.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tasks_core.settings import Settings
from worker.cli import add_arguments, queues_for

Doc = dict[str, Any]

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject-v2.20.2.json"

# The Kubernetes minor the manifests are checked against; bump it with the
# oldest cluster version supported.
K8S_VERSION = "1.34"

KEDA_API = "keda.sh/v1alpha1"

# The default QUEUE_PREFIX: the triggers' listNames are written for it.
QUEUE_PREFIX = "tasks"

# Metadata keys of KEDA's `redis` trigger, from pkg/scalers/redis_scaler.go at
# v2.20.2 (redisMetadata, redisConnectionInfo) and keda.sh/docs/scalers/redis-lists.
# KEDA also takes `username` and `password` in plain metadata; they are left
# out on purpose, because a ScaledObject is not a Secret.
REDIS_VALUE_KEYS = frozenset(
    {
        "address",
        "host",
        "port",
        "listName",
        "listLength",
        "activationListLength",
        "databaseIndex",
        "enableTLS",
        "unsafeSsl",
    }
)
# `<name>FromEnv` names an env var of the scale target's container.
REDIS_ENV_KEYS = frozenset(
    {"addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv", "passwordFromEnv"}
)
REDIS_INT_KEYS = ("listLength", "activationListLength", "databaseIndex")


# --- Loading -----------------------------------------------------------------------------


@cache
def manifest(name: str) -> tuple[Doc, ...]:
    """The documents of one manifest file (empty ones skipped)."""
    text = (K8S_DIR / name).read_text()
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def all_documents() -> Iterator[tuple[str, Doc]]:
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in manifest(path.name):
            yield path.name, doc


def doc_id(entry: tuple[str, Doc]) -> str:
    name, doc = entry
    return f"{name}:{doc['kind']}/{doc['metadata']['name']}"


def of_kind(kind: str, docs: tuple[Doc, ...] | list[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def scaled_pairs() -> Iterator[tuple[str, Doc, list[Doc]]]:
    """Each ScaledObject with the Deployments of its own file."""
    for name, doc in all_documents():
        if doc["apiVersion"] == KEDA_API and doc["kind"] == "ScaledObject":
            yield name, doc, of_kind("Deployment", manifest(name))


def deployments() -> list[tuple[str, Doc]]:
    return [(name, doc) for name, doc in all_documents() if doc["kind"] == "Deployment"]


def worker_deployments() -> list[tuple[str, Doc]]:
    return [
        (name, doc)
        for name, doc in deployments()
        if containers(doc)[0].get("args", [])[:1] == ["worker"]
    ]


def containers(deployment: Doc) -> list[Doc]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


# --- Schemas -----------------------------------------------------------------------------


def kubernetes_problems(doc: Doc) -> list[str]:
    """What the strict built-in schema of ``K8S_VERSION`` rejects (at most one:
    kubernetes-validate stops at the first error)."""
    try:
        checked = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    # The library falls back to an older schema when the pinned one is gone.
    assert checked == K8S_VERSION, f"validated against {checked}, not {K8S_VERSION}"
    return []


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists
    properties and says nothing of others. The API server prunes a CRD's
    unknown fields silently (structural schemas), so the CRD leaves them open;
    closing them here makes a misspelt field an error, as strict mode does for
    the built-in kinds."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def keda_validator() -> jsonschema.Draft202012Validator:
    schema = closed(json.loads(KEDA_SCHEMA.read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def keda_problems(doc: Doc) -> list[str]:
    """What the closed CRD schema rejects, and the CRD's one CEL rule (which
    jsonschema can not run)."""
    problems = [
        f"{'.'.join(map(str, err.absolute_path))}: {err.message}"
        for err in keda_validator().iter_errors(doc)
    ]
    # The CRD's metadata is a bare object; a ConfigMap carries the same ObjectMeta.
    meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    problems += kubernetes_problems(meta_only)
    spec = doc.get("spec", {})
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        problems.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
    return problems


def schema_problems(doc: Doc) -> list[str]:
    if doc["apiVersion"] == KEDA_API:
        return keda_problems(doc)
    return kubernetes_problems(doc)


# --- A ScaledObject and its pool ---------------------------------------------------------


def worker_queues(container: Doc) -> set[str]:
    """The queues ``tasks-core worker`` consumes with the container's args,
    parsed by the worker's own parser (a misspelt option is an error)."""
    args = container.get("args", [])
    if args[:1] != ["worker"]:
        raise ValueError(f"runs no worker: {args}")
    parser = argparse.ArgumentParser(prog="tasks-core worker", exit_on_error=False)
    add_arguments(parser)
    try:
        parsed, unknown = parser.parse_known_args(args[1:])
    except argparse.ArgumentError as exc:
        raise ValueError(f"bad worker arguments: {exc}") from exc
    if unknown:
        raise ValueError(f"unknown worker arguments {unknown}")
    # Without --kind a worker serves every kind its handlers register, which
    # the manifest can not know, so no trigger could be written for them.
    if not parsed.kind:
        raise ValueError("a scaled pool names its kinds (--kind)")
    return set(queues_for(parsed.kind, parsed.executor, known_kinds=[], prefix=QUEUE_PREFIX))


def env_source(scaled: Doc, target: Doc) -> Doc:
    """The container whose env KEDA resolves `*FromEnv` keys from."""
    pods = containers(target)
    wanted = scaled["spec"]["scaleTargetRef"].get("envSourceContainerName", pods[0]["name"])
    (container,) = [c for c in pods if c["name"] == wanted]
    return container


def trigger_problems(metadata: dict[str, str], queues: set[str], env: set[str]) -> list[str]:
    """What is wrong with one redis trigger's metadata for a pool of ``queues``
    whose container defines the env vars ``env``."""
    problems = [f"unknown key {k}" for k in metadata if k not in REDIS_VALUE_KEYS | REDIS_ENV_KEYS]
    if metadata.get("listName") not in queues:
        problems.append(f"listName {metadata.get('listName')} is not one of {sorted(queues)}")
    if "listLength" not in metadata:
        problems.append("no listLength (the per-replica target)")
    problems += [
        f"{k} is not an integer" for k in REDIS_INT_KEYS if not _int_or_absent(metadata, k)
    ]
    has = {k.removesuffix("FromEnv") for k in metadata}
    if "address" not in has and not {"host", "port"} <= has:
        problems.append("no address (address, addressFromEnv, or host and port)")
    problems += [
        f"{key}: env var {metadata[key]} is not in the container's env"
        for key in REDIS_ENV_KEYS & metadata.keys()
        if metadata[key] not in env
    ]
    return problems


def _int_or_absent(metadata: dict[str, str], key: str) -> bool:
    return key not in metadata or metadata[key].isdigit()


def scaling_problems(scaled: Doc, deployments_in_file: list[Doc]) -> list[str]:
    """What keeps ``scaled`` from scaling its pool on exactly the pool's queues."""
    ref = scaled["spec"]["scaleTargetRef"]
    if ref.get("kind", "Deployment") != "Deployment":
        return [f"scaleTargetRef: {ref.get('kind')} is not a Deployment"]
    targets = [d for d in deployments_in_file if d["metadata"]["name"] == ref["name"]]
    if not targets:
        return [f"scaleTargetRef: no Deployment {ref['name']} in this file"]
    container = env_source(scaled, targets[0])
    try:
        queues = worker_queues(container)
    except ValueError as exc:
        return [f"container {container['name']}: {exc}"]
    env = {var["name"] for var in container.get("env", [])}
    problems: list[str] = []
    watched: list[str] = []
    for trigger in scaled["spec"]["triggers"]:
        if trigger["type"] != "redis":
            problems.append(f"trigger {trigger.get('name')}: type {trigger['type']}, not redis")
            continue
        watched.append(trigger["metadata"].get("listName"))
        for problem in trigger_problems(trigger["metadata"], queues, env):
            problems.append(f"trigger {trigger.get('name')}: {problem}")
    # KEDA scales on the largest trigger: a queue without one is not looked at.
    if missing := queues - set(watched):
        problems.append(f"queues without a trigger: {sorted(missing)}")
    if len(watched) != len(set(watched)):
        problems.append(f"a queue has several triggers: {watched}")
    # A pool at zero serves nothing, and the sweeper fails tasks waiting on an
    # unserved queue after UNSERVED_TIMEOUT_SECONDS (tasks_core.unserved).
    if scaled["spec"].get("minReplicaCount", 0) < 1:
        problems.append("minReplicaCount below 1")
    return problems


# --- The manifests as they are -----------------------------------------------------------


@pytest.mark.parametrize("entry", list(all_documents()), ids=doc_id)
def test_document_matches_its_schema(entry: tuple[str, Doc]) -> None:
    _, doc = entry
    assert schema_problems(doc) == []


@pytest.mark.parametrize(
    ("name", "scaled", "in_file"),
    list(scaled_pairs()),
    ids=[f"{name}:{so['metadata']['name']}" for name, so, _ in scaled_pairs()],
)
def test_scaled_object_watches_the_queues_of_its_pool(
    name: str, scaled: Doc, in_file: list[Doc]
) -> None:
    assert scaling_problems(scaled, in_file) == []


def test_every_worker_pool_is_scaled() -> None:
    scaled = {(name, so["spec"]["scaleTargetRef"]["name"]) for name, so, _ in scaled_pairs()}
    pools = {(name, d["metadata"]["name"]) for name, d in worker_deployments()}
    assert pools, "no worker Deployment found"
    assert pools <= scaled


@pytest.mark.parametrize("entry", worker_deployments(), ids=doc_id)
def test_workers_get_their_shutdown_grace(entry: tuple[str, Doc]) -> None:
    """On SIGTERM a worker lets running tasks finish for SHUTDOWN_GRACE_SECONDS,
    then hands the rest back: the kubelet must not kill it before."""
    _, deployment = entry
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


@pytest.mark.parametrize("entry", deployments(), ids=doc_id)
def test_pods_follow_the_baseline(entry: tuple[str, Doc]) -> None:
    """Non-root (checkable: a numeric uid, the image's USER is a name), no
    privilege escalation, sized for the scheduler, a pinned image."""
    _, deployment = entry
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        assert not container["image"].endswith(":latest") and ":" in container["image"]


# --- The checks bite ---------------------------------------------------------------------


def _pool() -> tuple[Doc, list[Doc]]:
    """A copy of the gpu pool's ScaledObject and the Deployments of its file."""
    docs = copy.deepcopy(list(manifest("worker-pool.yaml")))
    (scaled,) = [
        d for d in of_kind("ScaledObject", docs) if d["metadata"]["name"] == "tasks-worker-gpu"
    ]
    return scaled, of_kind("Deployment", docs)


def _first_trigger(scaled: Doc) -> dict[str, str]:
    metadata: dict[str, str] = scaled["spec"]["triggers"][0]["metadata"]
    return metadata


def test_a_misspelt_field_of_a_built_in_kind_is_rejected() -> None:
    deployment = copy.deepcopy(of_kind("Deployment", manifest("api.yaml"))[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    assert any("imagePulPolicy" in p for p in schema_problems(deployment))


def test_a_misspelt_scaled_object_field_is_rejected_though_the_crd_allows_it() -> None:
    scaled, _ = _pool()
    scaled["spec"]["maxReplicasCount"] = 30
    raw = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    assert raw.is_valid(scaled)  # why the schema is closed before use
    assert any("maxReplicasCount" in p for p in schema_problems(scaled))


def test_a_misspelt_scaled_object_metadata_field_is_rejected() -> None:
    scaled, _ = _pool()
    scaled["metadata"]["lables"] = {"app": "x"}
    assert any("lables" in p for p in schema_problems(scaled))


Mutation = Callable[[Doc, list[Doc]], None]


def _misspell_list_name_key(scaled: Doc, _: list[Doc]) -> None:
    metadata = _first_trigger(scaled)
    metadata["listname"] = metadata.pop("listName")


def _watch_another_pools_queue(scaled: Doc, _: list[Doc]) -> None:
    _first_trigger(scaled)["listName"] = "tasks.CallAction"  # the default pool's queue


def _drop_a_trigger(scaled: Doc, _: list[Doc]) -> None:
    scaled["spec"]["triggers"].pop()


def _target_a_missing_deployment(scaled: Doc, _: list[Doc]) -> None:
    scaled["spec"]["scaleTargetRef"]["name"] = "tasks-worker-cpu"


def _drop_the_address_env(_: Doc, in_file: list[Doc]) -> None:
    for deployment in in_file:
        containers(deployment)[0].pop("env")


def _serve_every_kind(_: Doc, in_file: list[Doc]) -> None:
    for deployment in in_file:
        containers(deployment)[0]["args"] = ["worker", "--executor", "gpu"]


def _misspell_a_worker_option(_: Doc, in_file: list[Doc]) -> None:
    for deployment in in_file:
        containers(deployment)[0]["args"] += ["--kinds", "Train"]


# Each breaks the gpu pool one way, and the problem it must be reported with.
BROKEN_POOLS: list[tuple[Mutation, str]] = [
    (_misspell_list_name_key, "unknown key listname"),
    (_watch_another_pools_queue, "listName tasks.CallAction is not one of"),
    (_drop_a_trigger, "queues without a trigger"),
    (_target_a_missing_deployment, "no Deployment tasks-worker-cpu"),
    (_drop_the_address_env, "env var REDIS_ADDRESS is not in the container's env"),
    (_serve_every_kind, "names its kinds"),
    (_misspell_a_worker_option, "unknown worker arguments"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    BROKEN_POOLS,
    ids=[mutate.__name__.lstrip("_") for mutate, _ in BROKEN_POOLS],
)
def test_a_pool_scaled_on_the_wrong_queues_is_rejected(mutate: Mutation, expected: str) -> None:
    scaled, in_file = _pool()
    mutate(scaled, in_file)
    problems = scaling_problems(scaled, in_file)
    assert any(expected in p for p in problems), problems
