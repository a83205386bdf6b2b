"""Certificate maths for the webhook's builtin TLS mode (``--tls-secret``): a CA, a serving
certificate it signs, and when to renew either; and the checks ``mipart.cluster.tls`` makes
of any pair it is asked to serve. Pure: the ``cryptography`` package only, no
Kubernetes, no I/O; the time is always passed in. ``mipart.webhook.certificates`` keeps the
result in a Secret and publishes the CA (docs/webhook-certificates.md).

The Secret holds (PEM each; the keys of a kubernetes.io/tls Secret, plus the CA's keys):

- ``tls.crt``, ``tls.key``: the serving certificate and its key;
- ``ca.crt``: the CA bundle written into the webhook configurations' caBundle: the CA that
  signs ``tls.crt`` first, then during a CA rotation the next CA (or, right after the switch,
  the previous one);
- ``ca.key``: the key of the CA that signs ``tls.crt``;
- ``ca-next.key``: only during a CA rotation, the key of the next CA (its certificate is in
  ``ca.crt``).

Timings: the CA is valid 10 years and is rotated when less than a year is left; a serving
certificate is renewed when a third of its lifetime is left.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, replace
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
# A new CA is published beside the old one when the old has less than this left; the switch
# to it follows one serving lifetime later (or at the latest half-way through this year).
CA_RENEW_BEFORE = dt.timedelta(days=365)
SERVING_VALIDITY = dt.timedelta(days=90)
# Certificates start a little in the past, so that an API server whose clock is behind the
# webhook's still accepts a certificate made a moment ago; a tenth of the lifetime at most,
# so that a test's certificate of a few seconds is not renewed as soon as it is made.
MAX_BACKDATE = dt.timedelta(minutes=5)

TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
CA_KEY = "ca.key"
CA_NEXT_KEY = "ca-next.key"
SECRET_KEYS = (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY, CA_NEXT_KEY)

Force = Literal["certificate", "ca"]
StepKind = Literal["reissued", "renewed", "ca-published", "ca-switched"]


class PairError(ValueError):
    """A certificate and key that cannot serve together (unreadable, or not a pair)."""


@dataclass(frozen=True)
class Policy:
    """What the certificates must be: the names a client reaches the webhook by, and how long
    each lives."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()
    validity: dt.timedelta = SERVING_VALIDITY
    ca_validity: dt.timedelta = CA_VALIDITY
    ca_renew_before: dt.timedelta = CA_RENEW_BEFORE


@dataclass(frozen=True)
class Material:
    """The Secret's content, PEM bytes by key (b"" where a key is missing)."""

    tls_crt: bytes = b""
    tls_key: bytes = b""
    ca_crt: bytes = b""
    ca_key: bytes = b""
    ca_next_key: bytes = b""

    @classmethod
    def from_data(cls, data: dict[str, bytes]) -> Material:
        return cls(
            tls_crt=data.get(TLS_CRT, b""),
            tls_key=data.get(TLS_KEY, b""),
            ca_crt=data.get(CA_CRT, b""),
            ca_key=data.get(CA_KEY, b""),
            ca_next_key=data.get(CA_NEXT_KEY, b""),
        )

    def to_data(self) -> dict[str, bytes]:
        data = {
            TLS_CRT: self.tls_crt,
            TLS_KEY: self.tls_key,
            CA_CRT: self.ca_crt,
            CA_KEY: self.ca_key,
            CA_NEXT_KEY: self.ca_next_key,
        }
        return {k: v for k, v in data.items() if v}


@dataclass(frozen=True)
class Step:
    """What to write instead of what the Secret holds, and why (for the log)."""

    material: Material
    kind: StepKind
    reason: str


def service_names(dns_name: str) -> tuple[str, ...]:
    """A Service's DNS name and its short forms, longest first:
    ``mipart-webhook.ns.svc`` -> that, ``mipart-webhook.ns``, ``mipart-webhook``. Any other
    name stands alone."""
    labels = dns_name.split(".")
    names = [dns_name]
    if len(labels) >= 3 and labels[2] == "svc":
        names += [".".join(labels[:n]) for n in (3, 2, 1)]
    return tuple(dict.fromkeys(names))


# -- making certificates -------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    now: dt.datetime, validity: dt.timedelta = CA_VALIDITY
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA (ECDSA P-256) that may sign serving certificates only."""
    key = new_key()
    # The time in the name tells two CAs apart in a bundle and in `openssl x509 -text`.
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"mipart-webhook-ca@{int(now.timestamp())}")]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(validity))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only (ECDSA: no encipherment), and for a CA certificates and CRLs too."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_serving(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    policy: Policy,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A serving certificate (ECDSA P-256, a new key) for the policy's names, signed by the
    CA; it never outlives the CA."""
    key = new_key()
    not_after = min(now + policy.validity, ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in policy.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in policy.ip_addresses]
    common_name = policy.dns_names[0] if policy.dns_names else policy.ip_addresses[0]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(policy.validity))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def issue(policy: Policy, now: dt.datetime) -> Material:
    """A new CA and a serving certificate it signs: what an absent Secret gets."""
    ca_cert, ca_key = make_ca(now, policy.ca_validity)
    cert, key = make_serving(ca_cert, ca_key, policy, now)
    return Material(
        tls_crt=cert_pem(cert),
        tls_key=key_pem(key),
        ca_crt=cert_pem(ca_cert),
        ca_key=key_pem(ca_key),
    )


def _backdate(validity: dt.timedelta) -> dt.timedelta:
    return min(MAX_BACKDATE, validity / 10)


# -- deciding ------------------------------------------------------------------------------


def renew_due(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Whether a third of the certificate's lifetime, or less, is left."""
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= not_after - (not_after - not_before) / 3


def ca_rotation_due(ca_cert: x509.Certificate, now: dt.datetime, policy: Policy) -> bool:
    """Whether the CA has less than ``policy.ca_renew_before`` left."""
    return ca_cert.not_valid_after_utc - now < policy.ca_renew_before


def ca_switch_at(
    signer: x509.Certificate, next_ca: x509.Certificate, policy: Policy
) -> dt.datetime:
    """When the next CA starts signing: one serving lifetime after it was published (every
    API server has long had the bundle with both by then), and before the old CA's last half
    of ``ca_renew_before`` in any case."""
    published = next_ca.not_valid_before_utc + _backdate(policy.ca_validity)
    return min(published + policy.validity, signer.not_valid_after_utc - policy.ca_renew_before / 2)


def next_step(
    material: Material, policy: Policy, now: dt.datetime, force: Force | None = None
) -> Step | None:
    """What the Secret should hold instead of ``material`` at ``now``; None when it is fine.

    In order: a CA that cannot sign (missing, unreadable, expired) -> everything new; a CA
    rotation that is due -> publish the next CA beside the current one, or, one serving
    lifetime later, switch to it (a serving certificate from the new CA; the old CA stays in
    the bundle until the next renewal); a serving certificate that is missing, does not pair
    with its key, is not from the current CA, names other names, lives longer than
    ``policy.validity`` or has a third of its life left -> a new one from the same CA with a
    new key.

    ``force``: "certificate" renews the serving certificate now; "ca" publishes a next CA now,
    or, when one is already published, switches to it now.
    """
    try:
        signer, signer_key = _ca_pair(material.ca_crt, material.ca_key)
    except PairError as err:
        return Step(issue(policy, now), "reissued", f"no usable CA in the Secret: {err}")
    if now >= signer.not_valid_after_utc:
        return Step(issue(policy, now), "reissued", "the CA has expired")
    bundle = _certificates(material.ca_crt)
    next_ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    if material.ca_next_key:
        try:
            next_ca = _ca_pair(material.ca_crt, material.ca_next_key)
        except PairError:
            next_ca = None  # a broken rotation is started again below

    if next_ca is not None and (force == "ca" or now >= ca_switch_at(signer, next_ca[0], policy)):
        new_signer, new_key = next_ca
        cert, key = make_serving(new_signer, new_key, policy, now)
        return Step(
            Material(
                tls_crt=cert_pem(cert),
                tls_key=key_pem(key),
                # The old CA stays trusted until the next renewal: replicas that have not
                # loaded the new serving certificate yet still serve one it signed.
                ca_crt=cert_pem(new_signer) + cert_pem(signer),
                ca_key=key_pem(new_key),
            ),
            "ca-switched",
            "asked for" if force == "ca" else "the next CA has been published one serving lifetime",
        )
    if next_ca is None and (force == "ca" or ca_rotation_due(signer, now, policy)):
        new_signer, new_key = make_ca(now, policy.ca_validity)
        return Step(
            replace(
                material,
                ca_crt=cert_pem(signer) + cert_pem(new_signer),
                ca_key=key_pem(signer_key),
                ca_next_key=key_pem(new_key),
            ),
            "ca-published",
            "asked for"
            if force == "ca"
            else f"the CA expires at {signer.not_valid_after_utc.isoformat()}",
        )

    problem = "asked for" if force == "certificate" else None
    problem = problem or serving_problem(material, signer, policy, now)
    if problem is None:
        return None
    cert, key = make_serving(signer, signer_key, policy, now)
    trusted = [signer] + [c for c in bundle if next_ca is not None and c == next_ca[0]]
    return Step(
        replace(
            material,
            tls_crt=cert_pem(cert),
            tls_key=key_pem(key),
            ca_crt=b"".join(cert_pem(c) for c in trusted),
            ca_key=key_pem(signer_key),
        ),
        "renewed",
        problem,
    )


def serving_problem(
    material: Material, signer: x509.Certificate, policy: Policy, now: dt.datetime
) -> str | None:
    """Why the serving certificate must be renewed, or None."""
    try:
        cert = check_pair(material.tls_crt, material.tls_key)
    except PairError as err:
        return str(err)
    if not signed_by(cert, signer):
        return "the serving certificate is not signed by the current CA"
    if names(cert) != (set(policy.dns_names), set(policy.ip_addresses)):
        return "the serving certificate names other names"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    # Certificate times have whole seconds: a second or two of slack.
    if lifetime > policy.validity + _backdate(policy.validity) + dt.timedelta(seconds=2):
        # A shortened validity applies at once; a longer one from the next renewal (so that
        # replicas of two versions in a rolling update do not renew in turn).
        return "the serving certificate outlives the validity asked for"
    if renew_due(cert, now):
        return f"a third of its lifetime is left (expires {cert.not_valid_after_utc.isoformat()})"
    return None


# -- reading certificates ------------------------------------------------------------------


def check_pair(cert_bytes: bytes, key_bytes: bytes) -> x509.Certificate:
    """The first certificate of ``cert_bytes`` if ``key_bytes`` is its key; PairError if
    either is unreadable (half-written, say) or they are not a pair."""
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError as err:
        raise PairError(f"the certificate is not readable PEM: {err}") from err
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as err:
        raise PairError(f"the key is not readable PEM: {err}") from err
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise PairError(f"the key does not belong to the certificate (serial {serial_hex(cert)})")
    return cert


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """The certificate's DNS names and IP addresses (subjectAltName)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return (
        set(san.get_values_for_type(x509.DNSName)),
        {str(a) for a in san.get_values_for_type(x509.IPAddress)},
    )


def serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


def describe(cert: x509.Certificate) -> dict[str, str]:
    """For log lines."""
    return {
        "serial": serial_hex(cert),
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def describe_pem(cert_pem: bytes) -> dict[str, str]:
    """describe() of the first certificate in PEM; {} if there is none."""
    try:
        return describe(x509.load_pem_x509_certificate(cert_pem))
    except ValueError:
        return {}


def bundle_serials(pem: bytes) -> list[str]:
    """The serials of the certificates in a PEM bundle, for log lines."""
    return [serial_hex(c) for c in _certificates(pem)]


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _ca_pair(
    bundle_pem: bytes, key_bytes: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate in the bundle that ``key_bytes`` is the key of, and the key."""
    if not key_bytes:
        raise PairError("no CA key")
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as err:
        raise PairError(f"the CA key is not readable PEM: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PairError("the CA key is not an ECDSA key")
    public = _public_der(key.public_key())
    for cert in _certificates(bundle_pem):
        if _public_der(cert.public_key()) == public:
            return cert, key
    raise PairError("no certificate in ca.crt belongs to the CA key")


def _public_der(public: CertificatePublicKeyTypes | PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
