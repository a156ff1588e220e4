"""What a farm node advertises and what each stage of a cell asks for, as Ray custom resources.

A node offers NODE_UNITS units of `evitdeploy-node`: an export takes one (many run at once, up to
the node's CPUs), a bench takes all of them, so Ray itself never starts another farm task on a node
while a bench holds it, and never starts a bench while anything else runs there. A node also offers
`evitdeploy-exports` unless it is bench-only (`worker --bench-only`: a Jetson that should only time),
and only an export asks for it.
"""

from __future__ import annotations

from typing import Optional

from evitdeploy.errors import UserError

NODE = "evitdeploy-node"
NODE_UNITS = 1000
EXPORTS = "evitdeploy-exports"
PROFILE_PREFIX = "evitdeploy-profile:"
BACKEND_PREFIX = "evitdeploy-backend:"


def profile_resource(name: str) -> str:
    return PROFILE_PREFIX + name


def backend_resource(folder: str) -> str:
    return BACKEND_PREFIX + folder


def advertised(profiles: list[str], backends: list[str], *, exports: bool = True) -> dict[str, float]:
    """The custom resources of a node that is these profiles and has these backends (and takes
    exports, unless it only benches)."""
    return {
        NODE: NODE_UNITS,
        **({EXPORTS: NODE_UNITS} if exports else {}),
        **{profile_resource(p): 1 for p in profiles},
        **{backend_resource(b): NODE_UNITS for b in backends},
    }


def export_needs(backend: str) -> dict[str, float]:
    return {NODE: 1, EXPORTS: 1, backend_resource(backend): 1}


def bench_needs(backend: str, profile: Optional[str]) -> dict[str, float]:
    return {NODE: NODE_UNITS, backend_resource(backend): 1, **({profile_resource(profile): 1} if profile else {})}


def node_profiles(resources: dict) -> list[str]:
    return sorted(key[len(PROFILE_PREFIX) :] for key in resources if key.startswith(PROFILE_PREFIX))


def node_backends(resources: dict) -> list[str]:
    return sorted(key[len(BACKEND_PREFIX) :] for key in resources if key.startswith(BACKEND_PREFIX))


def installed_backends() -> list[str]:
    """The backends `doctor` finds installed here (their packages present)."""
    from evitdeploy.backends import BACKENDS
    from evitdeploy.doctor import installed

    return [b.folder for b in BACKENDS.values() if all(installed(p.distribution) for p in b.packages)]


def host_profiles(requested: Optional[list[str]] = None) -> list[str]:
    """The profiles this host may advertise: the requested ones, each refused unless this host is of
    its kind (the rule `deploy` judges budgets by), or else every shipped profile it is of."""
    from evitdeploy.profiles import host_kind, load_profile, shipped_names

    if not requested:
        return [name for name in shipped_names() if host_kind(load_profile(name))[0]]
    names = []
    for name in requested:
        profile = load_profile(name)
        matches, why = host_kind(profile)
        if not matches:
            raise UserError(
                f"this host cannot advertise profile {profile.name}: {why}", "pass only the profiles this host is (`evitdeploy profiles` says which run here)"
            )
        names.append(profile.name)
    return list(dict.fromkeys(names))


def satisfiable(needs: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(key, 0) >= amount for key, amount in needs.items())
