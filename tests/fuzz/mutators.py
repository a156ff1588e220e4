"""Hypothesis strategies that damage what evitdeploy reads: JSON documents (manifests, results,
profiles), binary files (models, reference data) and folders (artifacts, bundles).

Kept apart from the tests so every verb, present and future, can be fuzzed with them:

    @given(st.data())
    def damaged_bundle_property(data):   # called from a test function
        folder = copy_folder(bundle, sandbox / "bundle")
        data.draw(folder_mutation(folder, manifest="manifest.json"))   # damages one or more files, re-hashes
        ...   # run the verb, assert its exit code, its one error line, nothing left behind

After a file is damaged the folder's manifest is re-hashed (`rehash`), so the damage passes the
sha256 check and reaches the parser: exactly what someone who edits a bundle by hand produces.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

# ---- values nobody expects ----

MARKUP = ["[/]", "[bold]", "[red]x[/red]", "[link=file:///etc]x", ":cat:", "[/bold]"]
CONTROL = ["a\nb", "a\r\nb", "tab\there", "\x1b[31mred", "nul\x00", "bell\x07", "\u202eevil", "line\u2028sep"]
LONG = ["n" * 300, "é" * 200, "x/" * 200]
WEIRD_STRINGS = [*MARKUP, *CONTROL, *LONG, "", " ", "-", "--", "../..", "%s%n", "{0}", "None", "nan", "é中文", "\udcff"]
HUGE_NUMBERS = [10**30, -(10**30), 2**63, 2**64, -1, 0, 1e308, -1e308, 1e-320, float("nan"), float("inf"), float("-inf")]


class Deep:
    """A value nested `depth` lists deep, written as raw text (json.dumps itself would recurse)."""

    def __init__(self, depth: int):
        self.depth = depth

    def text(self) -> str:
        return "[" * self.depth + "]" * self.depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"


def weird_scalars() -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(HUGE_NUMBERS),
        st.integers(min_value=-5, max_value=5),
        st.sampled_from(WEIRD_STRINGS),
        st.text(max_size=12),
    )


def weird_values() -> st.SearchStrategy:
    """Any JSON value a careless or hostile writer might put where something else belongs."""
    return st.one_of(
        weird_scalars(),
        st.just([]),
        st.just({}),
        st.lists(weird_scalars(), max_size=4),
        st.dictionaries(st.sampled_from(["kind", "a", "files", "spec", "[/]", "x" * 300]), weird_scalars(), max_size=3),
        st.sampled_from([Deep(100_000), Deep(2_000), Deep(50)]),
    )


# ---- JSON documents ----


def dumps(doc: Any) -> str:
    """json.dumps that also writes Deep values (as raw text) and NaN/Infinity (as Python does)."""
    deep: dict[str, Deep] = {}

    def replace(value):
        if isinstance(value, Deep):
            key = f"__deep_{len(deep)}__"
            deep[key] = value
            return key
        if isinstance(value, dict):
            return {str(k): replace(v) for k, v in value.items()}
        if isinstance(value, list):
            return [replace(v) for v in value]
        return value

    text = json.dumps(replace(doc), indent=1, ensure_ascii=False)
    for key, value in deep.items():
        text = text.replace(json.dumps(key), value.text())
    return text


def _paths(doc: Any, prefix: tuple = (), limit: int = 6) -> list[tuple]:
    """Every place in a document (dict keys and list indexes), up to `limit` deep."""
    found = [prefix]
    if len(prefix) >= limit:
        return found
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key), limit)
    elif isinstance(doc, list):
        for index, value in enumerate(doc[:4]):
            found += _paths(value, (*prefix, index), limit)
    return found


def _get(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def _retyped(value: Any) -> list:
    """Values of another type than `value`, and near-misses of the same type."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), None]
    if isinstance(value, (int, float)):
        return [str(value), [value], None, -value, value * 10**12, float("nan"), True]
    if isinstance(value, str):
        return [0, None, [value], {"value": value}, value + "[/]", value + "\nx", value * 40, value[:-1] or "x"]
    if isinstance(value, list):
        return ["x".join(map(str, value)) or "x", value[:-1], value + value, [None] * len(value), {}, Deep(100_000)]
    if isinstance(value, dict):
        return [[], "x", None, {k: v for k, v in list(value.items())[:-1]}]
    return ["x", 0, []]


@st.composite
def json_mutation(draw, doc: Any, max_steps: int = 3) -> Any:
    """A copy of `doc` with 1..max_steps damages: a key deleted, a value of the wrong type or out of
    range, a string with markup/newlines/300 chars, a list nested 100k deep, an unknown key."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_steps))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "retype", "replace", "insert"] if path else ["replace", "insert"]))
        if op == "insert":
            target = _get(doc, path)
            if isinstance(target, dict):
                target[draw(st.sampled_from(["unexpected", "[/]", "x" * 300, "a\nb"]))] = draw(weird_values())
                continue
            op = "replace"
        if not path:
            doc = draw(weird_values())  # the whole document is something else
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if op == "delete":
            if isinstance(parent, dict):
                del parent[key]
            else:
                del parent[key:]  # a list cut short
        elif op == "retype":
            parent[key] = draw(st.sampled_from(_retyped(parent[key])))
        else:
            parent[key] = draw(weird_values())
        if isinstance(doc, Deep) or not isinstance(doc, (dict, list)):
            break
    return doc


RAW_JSON_DAMAGE = [b"", b"{", b"null", b"[]", b"42", b'"text"', b"\xff\xfe\x00garbage", b'{"a": NaN}', b"[" * 100_000]


@st.composite
def json_text_mutation(draw, doc: Any) -> bytes:
    """The bytes of a damaged JSON file: mostly a parseable but wrong document, sometimes not JSON."""
    kind = draw(st.sampled_from(["document", "document", "document", "raw", "truncated"]))
    if kind == "raw":
        return draw(st.sampled_from(RAW_JSON_DAMAGE))
    text = dumps(doc).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return dumps(draw(json_mutation(doc))).encode("utf-8", "surrogatepass")


# ---- binary files ----


def _npz(arrays: dict, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_variants(original: Path) -> list[bytes]:
    """Reference data with the wrong keys, shapes, dtypes, values or an object (pickled) array."""
    try:
        with np.load(original) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception:  # an earlier step of the same example damaged it already
        arrays = {"inputs": np.zeros((1, 3, 64, 64), np.float32), "expected": np.zeros((1, 1000), np.float32)}
    variants = [
        _npz({"wrong": np.zeros(3, np.float32)}),
        _npz({k: v for k, v in list(arrays.items())[:-1]}),
        _npz({k: v.astype(np.float64) for k, v in arrays.items()}),
        _npz({k: v.reshape(-1) for k, v in arrays.items()}),
        _npz({k: v[..., :1] for k, v in arrays.items()}),
        _npz({k: np.full_like(v, np.nan) for k, v in arrays.items()}),
        _npz({k: -v for k, v in arrays.items()}),  # outputs that anti-correlate
        _npz({k: np.zeros_like(v) for k, v in arrays.items()}),
        _npz({k: np.array([{"a": 1}], dtype=object) for k in arrays}),  # needs pickle to read
        _npz({k: np.array(["text"]) for k in arrays}),
    ]
    return variants


@st.composite
def binary_mutation(draw, original: Path) -> bytes:
    """The bytes of a damaged binary file: truncated, emptied, random, bit-flipped, or (for .npz)
    a well-formed archive with the wrong content."""
    data = original.read_bytes()
    choices = ["truncate", "empty", "random", "flip"] + (["npz"] * 3 if original.suffix == ".npz" else [])
    kind = draw(st.sampled_from(choices))
    if kind == "truncate":
        return data[: draw(st.sampled_from([1, 16, 100, len(data) // 2, len(data) - 1]))]
    if kind == "empty":
        return b""
    if kind == "random":
        rng = random.Random(draw(st.integers(0, 2**16)))
        return bytes(rng.getrandbits(8) for _ in range(draw(st.sampled_from([1, 64, 4096]))))
    if kind == "flip":
        position = draw(st.integers(0, len(data) - 1)) if data else 0
        return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :] if data else b"\x00"
    return draw(st.sampled_from(npz_variants(original)))


# ---- folders (artifacts, bundles) ----


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rehash(folder: Path, manifest: str = "manifest.json") -> bool:
    """Make the manifest's sha256/bytes entries agree with the files again, so a damaged file passes
    the integrity check and reaches the parser. A no-op where the manifest itself is too damaged."""
    path = Path(folder) / manifest
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return False
    for name, entry in files.items():
        file = Path(folder) / name
        if isinstance(entry, dict) and file.is_file():
            entry["sha256"] = sha256_file(file)
            entry["bytes"] = file.stat().st_size
    _replace(path, dumps(doc).encode("utf-8", "surrogatepass"))
    return True


def _replace(path: Path, payload: bytes) -> None:
    """Write a new file in place of `path` (unlinking first: the original may be a hard link to a
    shared copy)."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.write_bytes(payload)


def copy_folder(source: Path, destination: Path) -> Path:
    """A copy whose big files are hard links (cheap); mutations replace files, never edit them."""
    shutil.copytree(source, destination, copy_function=os.link)
    return destination


@st.composite
def folder_mutation(draw, folder: Path, manifest: str = "manifest.json", outside: Path | None = None, max_steps: int = 2) -> list[str]:
    """Damage 1..max_steps files of an artifact or bundle folder, then (usually) re-hash its
    manifest. Returns a description of what was done (for the failure report)."""
    folder = Path(folder)
    done = []
    for _ in range(draw(st.integers(1, max_steps))):
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        if not names:
            break
        name = draw(st.sampled_from(names))
        path = folder / name
        op = draw(st.sampled_from(["content", "content", "content", "delete", "symlink", "directory", "extra"]))
        if op == "content":
            if path.suffix in (".json", ".jsonl"):
                try:
                    doc = json.loads(path.read_text())
                except (ValueError, RecursionError, UnicodeDecodeError):
                    doc = {}
                payload = draw(json_text_mutation(doc))
            elif path.suffix in (".txt", ".py", ".md"):
                payload = draw(st.sampled_from([b"", b"raise SystemExit(0)\n", path.read_bytes()[:50], b"\xff\xfe"]))
            else:
                payload = draw(binary_mutation(path))
            _replace(path, payload)
            done.append(f"{name}: content {payload[:60]!r}... ({len(payload)} bytes)")
        elif op == "delete":
            path.unlink()
            done.append(f"{name}: deleted")
        elif op == "symlink":
            # an identical file elsewhere, linked in: the sha256 still matches
            target_dir = outside or folder.parent
            target = target_dir / f"outside-{name}"
            shutil.copyfile(path, target)
            path.unlink()
            path.symlink_to(target)
            done.append(f"{name}: symlink to an identical file outside the folder")
        elif op == "directory":
            path.unlink()
            path.mkdir()
            done.append(f"{name}: replaced by a directory")
        else:
            extra = folder / draw(st.sampled_from(["extra.bin", "[x].json", "a\nb"]))
            extra.write_bytes(b"x")
            done.append(f"extra file {extra.name!r}")
    if draw(st.integers(0, 4)) > 0:  # usually re-hash, so the damage reaches the parser
        done.append(f"rehashed: {rehash(folder, manifest)}")
    return done
