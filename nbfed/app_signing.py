"""Signed apps: what the control node signs and what a site checks before any of an app runs.

A *statement* names one app with one configuration: the sha256 of its FAB (Flower's FAB hash,
over the exact bytes SuperLink stores and the sites fetch) and the run config sent with it,
less the keys that are the aggregator's per-run bookkeeping (`UNSIGNED_KEYS`: where the
ServerApp writes results, whether it resumes, the signature itself). nbfed's SuperNode hands
the ClientApp the signed keys only, so everything the site's code sees was signed.

Keys are Ed25519, in OpenSSH format. The consortium's signing key lives on the control node
(the pki stage makes it); each site trusts the public keys in its trust directory and, with
`site_approval: manual`, only its own approver's. A signature travels as `<key id>:<base64url>` in the run
config (`nbfed.signature`) or in a site's approval file.

This file needs only the standard library and `cryptography` (a Flower dependency): the site
image carries it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "nbfed-app/1"
SIGNATURE_KEY = "nbfed.signature"
UNSIGNED_KEYS = frozenset({SIGNATURE_KEY, "nbfed.results-dir", "nbfed.resume"})


@dataclass(frozen=True)
class Statement:
    """One app (its FAB's sha256) with one signed run config."""

    fab_sha256: str
    run_config: dict

    @classmethod
    def of(cls, fab_sha256: str, run_config: dict) -> Statement:
        return cls(fab_sha256, signed_config(run_config))

    def encode(self) -> bytes:
        return json.dumps(
            {"format": FORMAT, "fab-sha256": self.fab_sha256, "run-config": self.run_config},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @property
    def app_id(self) -> str:
        """The app's name at the sites: `nbfed approve <app id>`, "refused app <app id>"."""
        return hashlib.sha256(self.encode()).hexdigest()[:16]


def signed_config(run_config: dict) -> dict:
    return {k: v for k, v in sorted(run_config.items()) if k not in UNSIGNED_KEYS}


# -- keys ---------------------------------------------------------------------------------
# OpenSSH format, as `ssh-keygen -t ed25519` and community.crypto.openssh_keypair write them.
def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key (make one with ssh-keygen -t ed25519)")
    return key


def load_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys (`*.pub`, one `ssh-ed25519 ...` line each) in `directory`, by key id."""
    keys = {}
    for path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
        key = serialization.load_ssh_public_key(path.read_bytes().strip())
        if isinstance(key, Ed25519PublicKey):
            keys[key_id(key)] = key
    return keys


# -- signatures ---------------------------------------------------------------------------
def sign(key: Ed25519PrivateKey, statement: Statement) -> str:
    signature = base64.urlsafe_b64encode(key.sign(statement.encode())).decode()
    return f"{key_id(key.public_key())}:{signature}"


def signature_problem(signature: str, statement: Statement, trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """Why `signature` does not vouch for `statement` with a trusted key; None when it does."""
    if not signature:
        return "it is not signed"
    kid, _, encoded = signature.partition(":")
    if kid not in trusted:
        known = ", ".join(trusted) or "none"
        return f"it is signed by key {kid}, which this site does not trust (trusted: {known})"
    try:
        trusted[kid].verify(base64.urlsafe_b64decode(encoded.encode()), statement.encode())
    except (InvalidSignature, ValueError):
        return (
            f"its signature by key {kid} is not over this app and run config "
            "(the FAB or a setting was changed after signing)"
        )
    return None
