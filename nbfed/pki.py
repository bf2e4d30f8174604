"""A throw-away consortium PKI for the dry run and for tests: CA, SuperLink certificate, node keys.

Real deployments get theirs from the playbook (community.crypto on the control node; node
keys are generated on each site's own host). Here everything is made in one place, which
is only acceptable because nothing made here protects real data.

    OUT/ca.crt, OUT/ca.key            the CA (P-384)
    OUT/server.pem, OUT/server.key    SuperLink's and the proxy's certificate, SANs as given
    OUT/nodes/<site>, <site>.pub      each site's SuperNode key (ECDSA P-384, OpenSSH format)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 30


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(entry: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(
    out: Path, sans: list[str], sites: list[str], uid: int | None = None, ca_name: str = "nbfed dry-run CA"
) -> None:
    """Write the CA, a server certificate for `sans` and one node key per site into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "nodes").mkdir(exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(sans[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(out / "ca.key", _pem_key(ca_key), 0o600)
    _write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out / "server.key", _pem_key(key), 0o600)
    _write(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for site in sites:
        node = ec.generate_private_key(ec.SECP384R1())
        private = node.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = node.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(out / "nodes" / site, private, 0o600)
        _write(out / "nodes" / f"{site}.pub", public + f" {site}\n".encode(), 0o644)
    if uid is not None:  # the containers run as this uid and must read their keys
        for path in [out, *out.rglob("*")]:
            os.chown(path, uid, uid)
