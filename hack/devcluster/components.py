"""Command lines of the control-plane components, all bound to 127.0.0.1 on free ports.

Flags follow what kubeadm and kwokctl set, minus what a single-host test cluster cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hack.devcluster.binaries import Binaries
from hack.devcluster.credentials import Pki

# Every Service lives in this range; nothing routes to it (there is no kube-proxy), but the
# apiserver needs one to allocate ClusterIPs.
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    mipart_scheduler: int
    kwok: int
    # Where mipart's kube-scheduler looks for its extender (the test starts one there), and
    # where that extender serves its probes and metrics.
    extender: int
    extender_status: int


def etcd(binaries: Binaries, ports: Ports, data_dir: Path) -> list[str]:
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    client = f"http://127.0.0.1:{ports.etcd_client}"
    return [
        binaries("etcd"),
        "--name=mipart",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=mipart={peer}",
        # The data is thrown away with the cluster: durability buys nothing but slow writes.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def kube_apiserver(binaries: Binaries, ports: Ports, pki: Pki) -> list[str]:
    return [
        binaries("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        "--authorization-mode=Node,RBAC",
        # The defaults already include these; named so that a reader sees webhooks are on.
        "--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,"
        "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki.service_accounts.cert}",
        f"--service-account-signing-key-file={pki.service_accounts.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # The aggregation layer's front proxy, as kubeadm sets it up. Without it every component
        # that delegates authentication logs errors about a missing request-header CA.
        f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        "--allow-privileged=true",
        # How it authenticates to a real kubelet (hack/devcluster/realnode.py) for logs and
        # exec: a client certificate the kubelet's webhook authentication accepts. The kubelet
        # serves a self-signed certificate, so --kubelet-certificate-authority stays unset.
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        # The apiserver would publish 127.0.0.1 as the `kubernetes` Service endpoint, which
        # Endpoints validation rejects as loopback; in-cluster clients do not exist here.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]


def kube_controller_manager(
    binaries: Binaries, ports: Ports, pki: Pki, kubeconfig: Path
) -> list[str]:
    return [
        binaries("kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        "--leader-elect=false",
        # Each controller acts as its own service account, so RBAC applies to them as in a
        # kubeadm cluster.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_accounts.key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false",
    ]


def kube_scheduler_default(binaries: Binaries, ports: Ports, kubeconfig: Path) -> list[str]:
    """The cluster's own default scheduler (profile `default-scheduler`), as every cluster has.
    No leader election: it is the only one."""
    return [
        binaries("kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kube_scheduler_from_config(
    binaries: Binaries, ports: Ports, config: Path, kubeconfig: Path
) -> list[str]:
    """mipart's scheduler, configured by its KubeSchedulerConfiguration file. The two
    delegation kubeconfigs are what a Deployment gets from its in-cluster service account."""
    return [
        binaries("kube-scheduler"),
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.mipart_scheduler}",
    ]
