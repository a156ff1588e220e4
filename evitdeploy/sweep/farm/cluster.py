"""Joining, starting and reading a Ray cluster: the only module that talks to Ray about nodes."""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Optional

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.sweep.farm import resources

INSTALL_HINT = "install it with: pip install 'evitdeploy[farm]'"
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds a one-machine cluster to 127.0.0.1


def import_ray():
    """Ray, imported whole: a Ctrl-C during the import (its Cython modules patch each other as they
    load) is held until it ends, else Python reports the cut import's traceback as it exits."""
    from evitdeploy.sweep.interrupt import sigint_deferred

    try:
        with sigint_deferred():
            import ray
    except ImportError:
        raise UserError("the ray executor needs ray, which is not installed", INSTALL_HINT, EXIT_BACKEND_UNAVAILABLE) from None
    return ray


AUTH_HINT = (
    "a head started by `ray start` / `evitdeploy worker --head` requires its token: on this machine set RAY_AUTH_MODE=token "
    "and put the head's token (`ray get-auth-token` there) in ~/.ray/auth_token"
)


_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.\-]{1,253}):(?P<port>\d{1,5})")


def check_address(address: Optional[str], auto: bool = True) -> None:
    """The one check of a farm head's --address (sweep, deploy and worker): HOST:PORT with a port
    from 1 to 65535, or (where `auto`) 'auto', the cluster running on this machine."""
    if address is None or (auto and address == "auto"):
        return
    found = _HOST_PORT.fullmatch(address)
    if found is None or not 1 <= int(found["port"]) <= 65535:
        raise UserError(
            f"--address {address!r} is not HOST:PORT",
            "pass the head's address, e.g. --address 10.0.0.5:6379" + (", or 'auto' for the cluster running here" if auto else ""),
        )


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
            _require_reachable(address)
            ray.init(address=address, **quiet)
            return False
        ray.init(
            address="local",  # a new one-node farm, even where another Ray cluster runs
            num_cpus=os.cpu_count() or 1,
            resources=resources.advertised(resources.host_profiles(), resources.installed_backends()),
            include_dashboard=False,
            **quiet,
        )
        return True
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray head at {address}" if address else "a Ray node on this machine"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach {where} ({first})",
            "start the head with `evitdeploy worker --head` (or `ray start --head`) and pass its HOST:PORT, or drop --address to run Ray here; " + AUTH_HINT,
            EXIT_BACKEND_UNAVAILABLE,
        ) from None


def _require_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Ray retries an unreachable head for ever; a plain TCP connect says at once that nobody listens."""
    import socket

    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address}: {exc.strerror or exc}") from None


def disconnect() -> None:
    """Leave the cluster, if we are in it: Ctrl-C may have cut `import ray` or `ray.init` short."""
    ray = sys.modules.get("ray")  # an import that Ctrl-C cut short left no `ray` to import again
    if ray is not None and hasattr(ray, "shutdown") and ray.is_initialized():
        ray.shutdown()


def alive_nodes() -> list[dict]:
    """Every live node: its id, host, and what it advertises."""
    ray = import_ray()
    return [
        {
            "node_id": node["NodeID"],
            "host": node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?"),
            "resources": dict(node.get("Resources", {})),
        }
        for node in ray.nodes()
        if node.get("Alive")
    ]


def describe(nodes: list[dict]) -> str:
    """The farm in one phrase, for errors: 'hostA (x86-cpu; onnxruntime, openvino), hostB (...)'."""
    parts = [
        f"{node['host']} ({', '.join(resources.node_profiles(node['resources'])) or 'no profile'}; {', '.join(resources.node_backends(node['resources'])) or 'no backend'})"
        for node in nodes
    ]
    return ", ".join(parts) or "no live node"


def ray_start_command(
    address: Optional[str],
    advertisement: dict,
    *,
    num_cpus: Optional[int] = None,
    port: int = 6379,
    node_ip: Optional[str] = None,
) -> list[str]:
    """`ray start` for a node with these custom resources: joining `address`, or the head
    (listening on `port`) when address is None."""
    import json

    command = [_ray_cli(), "start", f"--address={address}" if address else "--head", f"--resources={json.dumps(advertisement)}"]
    if address is None:
        command += [f"--port={port}", "--include-dashboard=false"]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if node_ip:
        command.append(f"--node-ip-address={node_ip}")
    return command


def worker_plan(
    address: Optional[str],
    *,
    profiles: Optional[list[str]] = None,
    num_cpus: Optional[int] = None,
    port: int = 6379,
    node_ip: Optional[str] = None,
    bench_only: bool = False,
) -> dict:
    """What `evitdeploy worker` will advertise and the `ray start` that does it; a profile this host
    is not of is refused here (before Ray starts)."""
    names = resources.host_profiles(profiles)
    backends = resources.installed_backends()
    check_address(address, auto=False)
    if bench_only and not names:
        raise UserError("--bench-only on a node of no profile would take no work", "pass --profile NAME for the device this node is, or drop --bench-only")
    advertisement = resources.advertised(names, backends, exports=not bench_only)
    command = ray_start_command(address, advertisement, num_cpus=num_cpus, port=port, node_ip=node_ip)
    return {
        "role": "head" if address is None else "worker",
        "address": address,
        "profiles": names,
        "backends": backends,
        "bench_only": bench_only,
        "resources": advertisement,
        "command": command,
    }


def run_ray(command: list[str]) -> dict:
    """Run a `ray start` / `ray stop`; a failure is one line with Ray's own last words."""
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        refused = [line for line in said if "AuthenticationError" in line or "InvalidAuthToken" in line]
        if refused:
            raise UserError(f"`ray {command[1]}` was refused by the head: {refused[-1][:300]}", AUTH_HINT, EXIT_BACKEND_UNAVAILABLE)
        raise UserError(
            f"`ray {command[1]}` failed: {said[-1] if said else f'exit {done.returncode}'}",
            "check the head's address and that its port is reachable",
            EXIT_BACKEND_UNAVAILABLE,
        )
    return {"ray_output": done.stdout.strip().splitlines()[-12:]}


def ray_stop_command() -> list[str]:
    return [_ray_cli(), "stop"]


def _ray_cli() -> str:
    """Ray's own command line, from this environment first."""
    found = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if found is None:
        raise UserError("the `ray` command is not installed", INSTALL_HINT, EXIT_BACKEND_UNAVAILABLE)
    return found
