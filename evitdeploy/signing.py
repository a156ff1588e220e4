"""Signing bundles with the OpenSSF model-signing format (key-based, offline).

`deploy --sign-key KEY.pem` signs the finished bundle folder with an elliptic-curve private key:
the signature (`model.sig`, a Sigstore bundle holding an in-toto statement with the sha256 of
every file, manifest.json included) lands beside the files it covers. The signature file and
git's files are left out exactly as the standard `model_signing` CLI leaves them out, so
`model_signing verify key --signature model.sig --public_key PUB.pem BUNDLE` accepts it too.
Verification lives in `device.integrity.check_signature` (a bundle's verify.py carries it).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from evitdeploy.device.integrity import SIGNATURE
from evitdeploy.errors import BackendUnavailable, UserError, first_line
from evitdeploy.files import TEXT_MAX_BYTES, read_input

INSTALL = "pip install 'evitdeploy[signing]'"
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing signs with
MAKE_KEY = "make one with: openssl ecparam -name prime256v1 -genkey -noout -out key.pem"


def require_model_signing() -> None:
    if importlib.util.find_spec("model_signing") is None:
        raise BackendUnavailable("model-signing", INSTALL)


def load_private_key(path: Path):
    """The EC private key in `path`, refused with one line when it cannot sign a bundle."""
    path = Path(path)
    data = read_input(path, "signing key", f"pass a PEM EC private key; {MAKE_KEY}", limit=TEXT_MAX_BYTES)
    require_model_signing()  # cryptography comes with it
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise UserError(f"signing key {path} is encrypted", "pass an unencrypted PEM EC private key (openssl ec -in KEY -out plain.pem)") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UserError(f"{path} is not a PEM private key", f"pass a PEM EC private key; {MAKE_KEY}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.replace("_", "").replace("PrivateKey", "") or "non-EC"
        raise UserError(f"signing key {path} is a {kind} key; model-signing signs with EC keys (P-256, P-384, P-521)", MAKE_KEY)
    if key.curve.name not in CURVES:
        raise UserError(f"signing key {path} is on curve {key.curve.name}; model-signing signs with P-256, P-384 or P-521", MAKE_KEY)
    return key


def key_id(private_key) -> str:
    """The sha256 of the public key's PEM: the hint model-signing writes into the signature."""
    from cryptography.hazmat.primitives import serialization

    pem = private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def signature_section(key_path: Path) -> dict:
    """What the bundle manifest records about its signature (the manifest itself is signed)."""
    return {
        "file": SIGNATURE,
        "format": "OpenSSF model signing (Sigstore bundle, in-toto statement, sha256 per file), elliptic-curve key",
        "public_key_sha256": key_id(load_private_key(key_path)),
        "verify": f"python3 verify.py --public-key PUB.pem, or model_signing verify key --signature {SIGNATURE} --public_key PUB.pem .",
    }


def sign_bundle(folder: Path, private_key: Path) -> Path:
    """Sign every file in `folder` (but the signature itself and git's files) into folder/model.sig."""
    folder, private_key = Path(folder), Path(private_key)
    load_private_key(private_key)
    from model_signing import hashing, signing

    signature = folder / SIGNATURE
    try:
        signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(
            hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True)
        ).sign(folder, signature)
    except Exception as exc:
        raise UserError(f"signing {folder} failed ({type(exc).__name__}: {first_line(exc)})", "check the key, or sign without --sign-key") from exc
    return signature
