"""Joining, starting and reading a Ray cluster: the only module that talks to Ray about nodes."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.sweep.farm import resources

INSTALL_HINT = "install it with: pip install 'evitdeploy[farm]'"
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds a one-machine cluster to 127.0.0.1


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs ray, which is not installed", INSTALL_HINT, EXIT_BACKEND_UNAVAILABLE) from None
    return ray


def connect(address: Optional[str]) -> bool:
    """Join the cluster at `address` ("auto": the one running on this machine), or start Ray here as
    a one-node farm advertising this host's profiles and backends. Returns whether we started it."""
    if address is None:
        os.environ.setdefault(LOOPBACK_ONLY, "0")  # a farm of this machine alone listens on loopback only
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": "ERROR", "log_to_driver": False, "namespace": "evitdeploy"}
    try:
        if address is not None:
            ray.init(address=address, **quiet)
            return False
        ray.init(
            num_cpus=os.cpu_count() or 1, resources=resources.advertised(resources.host_profiles(), resources.installed_backends()),
            include_dashboard=False, **quiet,
        )
        return True
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray head at {address}" if address else "a Ray node on this machine"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach {where} ({first})",
            "start the head with `evitdeploy worker --head` (or `ray start --head`) and pass its HOST:PORT, or drop --address to run Ray here",
            EXIT_BACKEND_UNAVAILABLE,
        ) from None


def disconnect() -> None:
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()


def alive_nodes() -> list[dict]:
    """Every live node: its id, host, and what it advertises."""
    ray = import_ray()
    return [
        {"node_id": node["NodeID"], "host": node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?"), "resources": dict(node.get("Resources", {}))}
        for node in ray.nodes() if node.get("Alive")
    ]


def describe(nodes: list[dict]) -> str:
    """The farm in one phrase, for errors: 'hostA (x86-cpu; onnxruntime, openvino), hostB (...)'."""
    parts = [
        f"{node['host']} ({', '.join(resources.node_profiles(node['resources'])) or 'no profile'}; {', '.join(resources.node_backends(node['resources'])) or 'no backend'})"
        for node in nodes
    ]
    return ", ".join(parts) or "no live node"


def ray_start_command(
    address: Optional[str], *, profiles: list[str], backends: list[str], num_cpus: Optional[int] = None, port: int = 6379, node_ip: Optional[str] = None,
) -> list[str]:
    """`ray start` for a node that advertises these profiles and backends: joining `address`, or the
    head (listening on `port`) when address is None."""
    import json

    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_cli is None:
        raise UserError("the `ray` command is not installed", INSTALL_HINT, EXIT_BACKEND_UNAVAILABLE)
    command = [ray_cli, "start", f"--address={address}" if address else "--head", f"--resources={json.dumps(resources.advertised(profiles, backends))}"]
    if address is None:
        command += [f"--port={port}", "--include-dashboard=false"]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    return command
