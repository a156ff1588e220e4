"""Signed bundles: `deploy --sign-key`, `verify --public-key`, verify.py on the device and the
standard `model_signing verify` CLI all refuse a bundle changed after signing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from helpers import BLOCKED, Cli, assert_clean_error, manifest_of, on_device, rewrite_manifest
from evitdeploy.device.integrity import SIGNATURE, sha256_of

DEPLOY = ("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--samples", "1")
FAST = ("--count", "2", "--warmup", "0")


def verify_py_on_device(folder: Path, *args: str, without: tuple = ()) -> subprocess.CompletedProcess:
    """A bundle's verify.py where torch and evitdeploy cannot be imported (a device), optionally without model-signing."""
    return on_device(folder / "verify.py", *args, blocked=BLOCKED + without)


def write_key(path: Path, key, openssl_style: bool = True) -> Path:
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if openssl_style else serialization.PrivateFormat.PKCS8
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    return path


def write_public(path: Path, key) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    mine, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    return {
        "private": write_key(folder / "key.pem", mine),  # the `openssl ecparam -genkey -noout` format
        "public": write_public(folder / "pub.pem", mine),
        "other_public": write_public(folder / "other.pem", other),
    }


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("signed") / "b0"
    result = Cli()(*DEPLOY, "-o", folder, "--sign-key", keys["private"], "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


@pytest.fixture
def bundle(signed, tmp_path) -> Path:
    return Path(shutil.copytree(signed[0], tmp_path / "b0"))


def edit_weight(folder: Path) -> None:
    """Flip one byte inside the model's weights and re-hash it: consistent, but not what was signed."""
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    rewrite_manifest(folder, lambda m: m["files"]["model.onnx"].update(sha256=sha256_of(model)))


def standard_verify(folder: Path, public: Path) -> subprocess.CompletedProcess:
    """The OpenSSF CLI as its users run it."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", "--signature", str(folder / SIGNATURE), "--public_key", str(public), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_signed_bundle_records_its_signature(signed):
    folder, summary = signed
    assert summary["passed"] and summary["signed"] is True and summary["signature"] == SIGNATURE
    assert (folder / SIGNATURE).is_file()
    manifest = manifest_of(folder)
    assert SIGNATURE not in manifest["files"]  # made after the manifest, covering it
    assert summary["sizes"]["files"] == len([p for p in folder.rglob("*") if p.is_file()])  # evitdeploy_device/'s files too
    assert manifest["bundle"]["signature"]["file"] == SIGNATURE and len(manifest["bundle"]["signature"]["public_key_sha256"]) == 64
    assert "--public-key PUB.pem" in summary["commands"]["verify_on_device"]
    readme = (folder / "README.txt").read_text()
    assert "python3 verify.py --public-key PUB.pem" in readme and f"model_signing verify key --signature {SIGNATURE} --public_key PUB.pem ." in readme
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no staging folder left


def test_signed_bundle_verifies_with_its_key(signed, keys, cli):
    result = cli("verify", signed[0], "--public-key", keys["public"], *FAST, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["signature"] == {"file": SIGNATURE, "signed": True, "checked": True, "public_key": str(keys["public"])}
    assert not any("signature" in w for w in report["warnings"])
    table = cli("verify", signed[0], "--public-key", keys["public"], *FAST)
    assert table.exit_code == 0 and "verified with" in table.stdout


def test_signed_bundle_without_key_says_signature_not_checked(signed, cli):
    result = cli("verify", signed[0], *FAST, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["signature"]["signed"] and not report["signature"]["checked"]
    assert any(w.startswith("signature not checked") for w in report["warnings"])
    table = cli("verify", signed[0], *FAST)
    assert table.exit_code == 0 and "signature not checked" in " ".join(table.stdout.split())


def test_another_key_is_refused(signed, keys, cli):
    result = cli("verify", signed[0], "--public-key", keys["other_public"], *FAST)
    assert_clean_error(result, 2, "not made with the private key paired with")


def test_edited_weight_with_rehashed_manifest_is_refused(bundle, keys, cli):
    edit_weight(bundle)
    unsigned_view = cli("verify", bundle, *FAST, "--json")  # the sha256 manifest alone cannot tell
    assert unsigned_view.exit_code in (0, 1), unsigned_view.output
    result = cli("verify", bundle, "--public-key", keys["public"], *FAST)
    assert_clean_error(result, 2, "changed after it was signed", "changed: manifest.json, model.onnx")


def test_loosened_tolerances_are_refused(bundle, keys, cli):
    rewrite_manifest(bundle, lambda m: m["bundle"]["tolerances"].update(max_abs=1.0))
    result = cli("verify", bundle, "--public-key", keys["public"], *FAST)
    assert_clean_error(result, 2, "changed: manifest.json")


def test_added_and_removed_files_are_named(bundle, keys, cli):
    (bundle / "extra.txt").write_text("not signed\n")
    (bundle / "check.json").unlink()
    rewrite_manifest(bundle, lambda m: m["files"].pop("check.json"))
    result = cli("verify", bundle, "--public-key", keys["public"], *FAST)
    assert_clean_error(result, 2, "added: extra.txt", "missing: check.json", "changed: manifest.json")


def test_altered_signature_file_is_refused(bundle, keys, cli):
    signature = json.loads((bundle / SIGNATURE).read_text())
    signature["dsseEnvelope"]["signatures"][0]["sig"] = signature["dsseEnvelope"]["signatures"][0]["sig"][::-1]
    (bundle / SIGNATURE).write_text(json.dumps(signature))
    assert_clean_error(cli("verify", bundle, "--public-key", keys["public"], *FAST), 2, SIGNATURE)
    (bundle / SIGNATURE).write_text("garbage")
    assert_clean_error(cli("verify", bundle, "--public-key", keys["public"], *FAST), 2, SIGNATURE)


def test_standard_model_signing_cli_accepts_and_refuses(bundle, keys):
    accepted = standard_verify(bundle, keys["public"])
    assert accepted.returncode == 0 and "Verification succeeded" in accepted.stdout, accepted.stderr
    rewrite_manifest(bundle, lambda m: m["bundle"]["tolerances"].update(max_abs=1.0))
    refused = standard_verify(bundle, keys["public"])
    assert refused.returncode == 1 and "manifest.json" in refused.stderr, refused.stdout + refused.stderr


def test_verify_py_on_the_device_checks_the_signature(bundle, keys):
    ok = verify_py_on_device(bundle, "--public-key", str(keys["public"]), *FAST)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"signature {SIGNATURE} verified" in ok.stdout and "PASSED" in ok.stdout
    unchecked = verify_py_on_device(bundle, *FAST, "--json")
    assert unchecked.returncode == 0, unchecked.stderr
    assert any(w.startswith("signature not checked") for w in json.loads(unchecked.stdout)["warnings"])
    edit_weight(bundle)
    refused = verify_py_on_device(bundle, "--public-key", str(keys["public"]), *FAST)
    assert refused.returncode == 2 and "changed: manifest.json, model.onnx" in refused.stderr, refused.stdout + refused.stderr
    assert refused.stderr.count("error:") == 1 and "Traceback" not in refused.stderr


def test_verify_py_without_model_signing_exits_3_with_the_hint(bundle, keys):
    result = verify_py_on_device(bundle, "--public-key", str(keys["public"]), *FAST, without=("model_signing",))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "pip install model-signing" in result.stderr and "Traceback" not in result.stderr


def test_unsigned_bundle(bundle, keys, cli):
    (bundle / SIGNATURE).unlink()
    # the manifest (signed) still says it was signed: a removed signature is refused, with or without a key
    assert_clean_error(cli("verify", bundle, *FAST), 2, "signature (model.sig) is missing")
    rewrite_manifest(bundle, lambda m: m["bundle"].pop("signature"))  # a truly unsigned bundle
    plain = cli("verify", bundle, *FAST, "--json")
    assert plain.exit_code == 0, plain.output
    report = json.loads(plain.stdout)
    assert report["signature"]["signed"] is False and not any("signature" in w for w in report["warnings"])
    assert_clean_error(cli("verify", bundle, "--public-key", keys["public"], *FAST), 2, "carries no signature")
    refused = verify_py_on_device(bundle, "--public-key", str(keys["public"]), *FAST)
    assert refused.returncode == 2 and "carries no signature" in refused.stderr


def test_bad_public_key_is_refused(signed, tmp_path, cli):
    assert_clean_error(cli("verify", signed[0], "--public-key", tmp_path / "absent.pem", *FAST), 2, "public key not found")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    assert_clean_error(cli("verify", signed[0], "--public-key", junk, *FAST), 2, "is not a PEM elliptic-curve public key")


def _bad_keys(folder: Path) -> dict:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    encrypted = folder / "encrypted.pem"
    encrypted.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    junk = folder / "junk.pem"
    junk.write_text("-----BEGIN EC PRIVATE KEY-----\nnot base64\n-----END EC PRIVATE KEY-----\n")
    return {
        "missing": (folder / "absent.pem", "signing key not found"),
        "junk": (junk, "is not a PEM private key"),
        "public key": (write_public(folder / "pub.pem", ec_key), "is not a PEM private key"),
        "rsa": (write_key(folder / "rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048), openssl_style=False), "RSA key"),
        "secp256k1": (write_key(folder / "k1.pem", ec.generate_private_key(ec.SECP256K1())), "curve secp256k1"),
        "encrypted": (encrypted, "is encrypted"),
        "folder": (folder, "is a folder, not a file"),
    }


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["missing", "junk", "public key", "rsa", "secp256k1", "encrypted", "folder"])
def test_bad_sign_key_is_refused_before_anything_is_written(kind, tmp_path, cli):
    keys_folder = tmp_path / "keys"
    keys_folder.mkdir()
    key, fragment = _bad_keys(keys_folder)[kind]
    out = tmp_path / "out"
    result = cli(*DEPLOY, "-o", out / "sub" / "b0", "--sign-key", key)
    assert_clean_error(result, 2, fragment)
    assert not out.exists()


def test_model_signing_missing_exits_3_with_the_install_hint(signed, keys, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "model_signing", None)  # import and find_spec both see it absent
    result = cli(*DEPLOY, "-o", tmp_path / "b0", "--sign-key", keys["private"])
    assert_clean_error(result, 3, "model-signing is not installed", "pip install 'evitdeploy[signing]'")
    assert not (tmp_path / "b0").exists()
    result = cli("verify", signed[0], "--public-key", keys["public"], *FAST)
    assert_clean_error(result, 3, "pip install 'evitdeploy[signing]'")
