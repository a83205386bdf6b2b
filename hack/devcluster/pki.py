"""Certificates for the control plane, made with the openssl CLI (on every Debian machine).

One CA signs everything: the apiserver's serving certificate and a client certificate per
identity. RBAC then sees each component as the user and groups in its certificate subject,
exactly as in a kubeadm cluster. EC P-256 keys, because RSA key generation is slow on 2 cores.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def make_ca(directory: Path, common_name: str = "mipart-test-ca") -> KeyPair:
    pair = KeyPair(directory / "ca.crt", directory / "ca.key")
    _openssl(
        "req", "-x509", "-new", *_EC, "-days", "3650", "-subj", f"/CN={common_name}",
        "-keyout", str(pair.key), "-out", str(pair.cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    return pair


def issue(
    ca: KeyPair,
    directory: Path,
    name: str,
    *,
    common_name: str,
    organizations: tuple[str, ...] = (),
    server_names: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
) -> KeyPair:
    """A certificate signed by ca: a server certificate when it has names or IPs, otherwise a
    client certificate whose CN is the Kubernetes user and whose O entries are its groups."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    subject = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
    sans = [f"DNS:{n}" for n in server_names] + [f"IP:{ip}" for ip in server_ips]
    usage = "serverAuth,clientAuth" if sans else "clientAuth"
    extensions = [
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", f"extendedKeyUsage={usage}",
    ]  # fmt: skip
    if sans:
        extensions += ["-addext", "subjectAltName=" + ",".join(sans)]
    _openssl(
        "req", "-x509", "-new", *_EC, "-days", "365", "-subj", subject,
        "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-keyout", str(pair.key), "-out", str(pair.cert), *extensions,
    )  # fmt: skip
    return pair


def make_signing_key(directory: Path, name: str) -> KeyPair:
    """A bare key pair (no certificate): the service-account token signing key. `cert` holds
    the public key."""
    pair = KeyPair(directory / f"{name}.pub", directory / f"{name}.key")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pair.key))
    _openssl("ec", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
    return pair
