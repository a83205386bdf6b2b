"""The cluster's certificates and keys, laid out as kubeadm lays out /etc/kubernetes/pki."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hack.devcluster import kubeconfig, pki

# The names and addresses by which clients reach the apiserver: loopback for us, and the
# in-cluster names and the first Service IP (of components.SERVICE_CIDR) for completeness.
APISERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: pki.KeyPair
    apiserver: pki.KeyPair
    service_accounts: pki.KeyPair  # cert = public key, key = signing key
    front_proxy_ca: pki.KeyPair
    front_proxy_client: pki.KeyPair
    # The apiserver's client certificate towards kubelets (logs, exec), as kubeadm's
    # apiserver-kubelet-client: a system:masters identity the kubelet's webhook authorizer allows.
    apiserver_kubelet_client: pki.KeyPair

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True)
        ca = pki.make_ca(directory)
        front_proxy = directory / "front-proxy"
        front_proxy.mkdir()
        # A CA of its own, as kubeadm does: a certificate from the main CA must not pass as
        # the aggregation proxy.
        front_proxy_ca = pki.make_ca(front_proxy, "mipart-test-front-proxy-ca")
        return cls(
            directory=directory,
            ca=ca,
            apiserver=pki.issue(
                ca,
                directory,
                "kube-apiserver",
                common_name="kube-apiserver",
                server_names=APISERVER_NAMES,
                server_ips=APISERVER_IPS,
            ),
            service_accounts=pki.make_signing_key(directory, "service-accounts"),
            front_proxy_ca=front_proxy_ca,
            front_proxy_client=pki.issue(
                front_proxy_ca, front_proxy, "front-proxy-client", common_name="front-proxy-client"
            ),
            apiserver_kubelet_client=pki.issue(
                ca,
                directory,
                "apiserver-kubelet-client",
                common_name="kube-apiserver-kubelet-client",
                organizations=("system:masters",),
            ),
        )

    def client_kubeconfig(
        self, path: Path, server: str, user: str, groups: tuple[str, ...] = ()
    ) -> Path:
        """A kubeconfig for a client certificate: RBAC sees user, in groups."""
        pair = pki.issue(self.ca, self.directory, user, common_name=user, organizations=groups)
        return kubeconfig.write(path, server=server, ca_cert=self.ca.cert, user=user, client=pair)

    def client_pair(self, user: str) -> pki.KeyPair:
        """The certificate that client_kubeconfig issued for user."""
        return pki.KeyPair(self.directory / f"{user}.crt", self.directory / f"{user}.key")


def cluster_ca(directory: Path) -> pki.KeyPair:
    """The CA in the pki directory of a cluster created earlier (maybe by another process)."""
    return pki.KeyPair(directory / "ca.crt", directory / "ca.key")
