"""The builtin TLS mode (``--tls-secret``): the webhook keeps its own CA and serving
certificate in a Secret, writes the CA into the caBundle of its webhook configurations, and
renews both before they expire. No cert-manager, nothing done by hand
(docs/webhook-certificates.md).

Every replica runs the same round (``check``), at start-up and then every minute:

1. read the Secret; absent -> make a CA and a serving certificate (mipart.cluster.pki) and
   create it. Replicas that start together race: the losers' create answers 409
   AlreadyExists and they use the winner's;
2. renew what is due (``pki.next_step``) by updating the Secret with the resourceVersion it
   was read at: of replicas that decide together, one write wins; the others' answer 409 and
   they read the winner's result again;
3. serve the Secret's pair to new connections (a replica that did not write notices the
   change at its next round);
4. patch each webhook's ``clientConfig.caBundle`` in the configurations named
   ``--ca-bundle-webhooks`` where it differs from the Secret's ``ca.crt`` (equal: no write).

The RBAC this needs (manifests/charts/mipart/templates/rbac-webhook.yaml): create Secrets in
its namespace; get and update that one Secret; get and patch the two configurations.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mipart.cluster import pki
from mipart.cluster.tls import ServingTls
from mipart.kube.api import KubeApi, KubeError

log = structlog.get_logger("mipart.webhook.certificates")

# An operator asks for a renewal by annotating the Secret (docs/webhook-certificates.md):
# "certificate" renews the serving certificate at the next round; "ca" publishes a new CA
# beside the current one (asked again: switches to it). The renewal removes the annotation.
RENEW_ANNOTATION = "mipart.io/renew"
LABELS = {
    "app.kubernetes.io/name": "mipart-webhook",
    "app.kubernetes.io/managed-by": "mipart-webhook",
}
CONFIGURATIONS = (
    ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
    ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
)
ADMISSION_API = "/apis/admissionregistration.k8s.io/v1"
# Rounds lost to other replicas' writes before this one gives up until the next round.
MAX_CONFLICTS = 5


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Conflict(Exception):
    """Someone else wrote the Secret first (409): read it again."""


@dataclass
class BuiltinCertificates:
    api: KubeApi
    namespace: str
    name: str
    policy: pki.Policy
    serving: ServingTls
    # The name of the Mutating- and ValidatingWebhookConfiguration to publish the CA in;
    # None: publish nowhere.
    ca_bundle_webhooks: str | None = None
    clock: Callable[[], dt.datetime] = field(default_factory=lambda: _utcnow)
    _missing: set[str] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def secret_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/{self.name}"

    def check(self) -> bool:
        """One round (the module's docstring); whether a certificate serves after it.
        Raises what the API server answered when it cannot be done (the Poll logs it, and
        the pair loaded before keeps serving)."""
        with self._lock:  # the start-up round and a woken Poll never overlap
            for _ in range(MAX_CONFLICTS):
                try:
                    material = self._settle()
                    break
                except _Conflict:
                    log.info("webhook.certificate.conflict", secret=self._ref())
            else:
                raise RuntimeError(f"{self._ref()}: {MAX_CONFLICTS} writes lost in a row")
            loaded = self.serving.load(
                material.tls_crt, material.tls_key, source=f"secret {self._ref()}"
            )
            if self.ca_bundle_webhooks is not None and material.ca_crt:
                self.publish(material.ca_crt)
            return loaded

    def start(self, stop: threading.Event, retry_s: float = 2.0) -> bool:
        """Rounds until a certificate serves (the API server may not answer yet, or RBAC
        may not be in place yet); False if ``stop`` is set first. A round that loaded the
        certificate but could not publish the CA counts: the next rounds publish it."""
        wait = retry_s
        while not stop.is_set():
            try:
                if self.check():
                    return True
            except Exception as err:  # the API server's answer, a refused connection, ...
                log.error("webhook.certificate.start_failed", secret=self._ref(), error=str(err))
                if self.serving.loaded:  # only the caBundle failed: later rounds retry it
                    return True
            stop.wait(wait)
            wait = min(wait * 2, 30.0)
        return False

    # -- the Secret ------------------------------------------------------------------------

    def _settle(self) -> pki.Material:
        """Read the Secret and write what it should hold (if anything); what it holds then."""
        secret = self._read()
        now = self.clock()
        if secret is None:
            material = pki.issue(self.policy, now)
            self._create(material)
            log.info(
                "webhook.certificate.created",
                secret=self._ref(),
                ca=pki.bundle_serials(material.ca_crt),
                **pki.describe_pem(material.tls_crt),
            )
            return material
        data = {k: _decoded(v) for k, v in (secret.get("data") or {}).items()}
        material = pki.Material.from_data(data)
        annotations = secret["metadata"].get("annotations") or {}
        asked = annotations.get(RENEW_ANNOTATION)
        force: pki.Force | None = None
        if asked is not None:
            force = "ca" if asked == "ca" else "certificate"
        step = pki.next_step(material, self.policy, now, force=force)
        if step is None:
            return material
        self._update(secret, step.material)
        log.info(
            f"webhook.certificate.{step.kind}",
            secret=self._ref(),
            reason=step.reason,
            ca=pki.bundle_serials(step.material.ca_crt),
            **pki.describe_pem(step.material.tls_crt),
        )
        return step.material

    def _read(self) -> dict[str, Any] | None:
        try:
            secret: dict[str, Any] = self.api.get(self.secret_path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise
        return secret

    def _create(self, material: pki.Material) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": LABELS},
            "type": "kubernetes.io/tls",
            "data": _encoded(material),
        }
        try:
            self.api.post(f"/api/v1/namespaces/{self.namespace}/secrets", body)
        except KubeError as err:
            if err.status == 409:  # another replica created it first: use theirs
                raise _Conflict from err
            raise

    def _update(self, secret: dict[str, Any], material: pki.Material) -> None:
        """Replace the Secret's data, at the resourceVersion it was read at (optimistic
        concurrency: PUT carries metadata.resourceVersion)."""
        metadata = dict(secret["metadata"])
        annotations = {
            k: v for k, v in (metadata.get("annotations") or {}).items() if k != RENEW_ANNOTATION
        }
        metadata["annotations"] = annotations
        body = {**secret, "metadata": metadata, "data": _encoded(material)}
        try:
            self.api.request("PUT", self.secret_path, body=body)
        except KubeError as err:
            # 409: written since it was read; 404: deleted since (the next try creates it).
            if err.status in (404, 409):
                raise _Conflict from err
            raise

    def _ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -- the caBundle ----------------------------------------------------------------------

    def publish(self, bundle_pem: bytes) -> None:
        """Set every webhook's clientConfig.caBundle in both configurations to the bundle,
        where it differs. A JSON patch per configuration: for each webhook to change, a test
        of its name at that index (the list may change between the GET and the PATCH: then
        the patch fails, and the next round tries again) and the caBundle."""
        name = self.ca_bundle_webhooks
        if name is None:
            return
        want = base64.b64encode(bundle_pem).decode()
        for kind, resource in CONFIGURATIONS:
            path = f"{ADMISSION_API}/{resource}/{name}"
            try:
                configuration = self.api.get(path)
            except KubeError as err:
                if err.status != 404:
                    raise
                if kind not in self._missing:  # once, not every round
                    self._missing.add(kind)
                    log.warning("webhook.ca_bundle.no_configuration", kind=kind, name=name)
                continue
            self._missing.discard(kind)
            operations: list[dict[str, Any]] = []
            changed = []
            for i, hook in enumerate(configuration.get("webhooks") or []):
                if (hook.get("clientConfig") or {}).get("caBundle") == want:
                    continue
                changed.append(hook["name"])
                operations += [
                    {"op": "test", "path": f"/webhooks/{i}/name", "value": hook["name"]},
                    {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want},
                ]
            if not operations:
                continue
            try:
                self.api.json_patch(path, operations)
            except KubeError as err:
                if err.status not in (409, 422):  # 422: a test failed (the list changed)
                    raise
                log.warning("webhook.ca_bundle.patch_lost", kind=kind, name=name, error=err.message)
                continue
            log.info(
                "webhook.ca_bundle.patched",
                kind=kind,
                name=name,
                webhooks=changed,
                ca=pki.bundle_serials(bundle_pem),
            )


def _decoded(value: str) -> bytes:
    """A data value; b"" where it is not base64 (edited by hand): renewed as if missing."""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def _encoded(material: pki.Material) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in material.to_data().items()}
