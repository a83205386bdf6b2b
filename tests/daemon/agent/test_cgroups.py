"""A process's pod, from its /proc/<pid>/cgroup (mipart.agent.limits.cgroups)."""

from pathlib import Path

import pytest

from mipart.agent.limits.cgroups import ProcPods, pod_uid_of

UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
SYSTEMD_UID = UID.replace("-", "_")
CID = "0c6a4ec2f7e1d6b3a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938"


@pytest.mark.parametrize(
    "cgroup",
    [
        # cgroup v2, cgroupfs driver, each QoS class (guaranteed pods have no class level).
        f"0::/kubepods/burstable/pod{UID}/{CID}",
        f"0::/kubepods/besteffort/pod{UID}/{CID}",
        f"0::/kubepods/pod{UID}/{CID}",
        # cgroup v2, systemd driver, containerd / CRI-O / Docker scopes.
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/cri-containerd-{CID}.scope",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice/crio-{CID}.scope",
        f"0::/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/docker-{CID}.scope",
        # kind with the systemd driver: everything under the kubelet's own slice.
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{SYSTEMD_UID}.slice/cri-containerd-{CID}.scope",
        # A reader in its own cgroup namespace sees paths relative to its own cgroup.
        f"0::/../../pod{UID}/{CID}",
        # The pod's cgroup itself (the pause process's parent), no container level.
        f"0::/kubepods/burstable/pod{UID}",
        # cgroup v1: a line per hierarchy; the unified and named ones may say less.
        "\n".join(
            [
                f"12:memory:/kubepods/burstable/pod{UID}/{CID}",
                f"11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}",
                f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}",
                "0::/",
            ]
        ),
        "\n".join(
            [
                "13:misc:/",
                f"4:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/cri-containerd-{CID}.scope",
            ]
        ),
        # Docker-in-Docker nodes put the kubelet's tree under the node container's cgroup.
        f"0::/docker/{CID}/kubepods/burstable/pod{UID}/{CID}",
        # The file ends with a newline.
        f"0::/kubepods/burstable/pod{UID}/{CID}\n",
    ],
)
def test_the_pod_uid_is_read_from_every_layout(cgroup: str) -> None:
    assert pod_uid_of(cgroup) == UID


@pytest.mark.parametrize(
    "cgroup",
    [
        "",
        "\n",
        "0::/",
        "0::/init.scope",
        "0::/user.slice/user-1000.slice/session-3.scope",
        "0::/system.slice/containerd.service",
        "0::/system.slice/kubelet.service",
        f"0::/machine.slice/libpod-{CID}.scope",  # podman, outside Kubernetes
        f"0::/docker/{CID}",
        "0::/kubepods/burstable",  # the QoS level, no pod
        "0::/kubepods/burstable/podnotauuid/abc",
        f"0::/kubepods/burstable/pod{UID[:-1]}/{CID}",  # one digit short
        f"0::/kubepods/burstable/pod{UID}x/{CID}",
        f"0::/kubepods/burstable/pod{UID.upper()}/{CID}",  # UIDs are lower-case
        f"0::/kubepods/burstable/pod{SYSTEMD_UID}/{CID}",  # cgroupfs never escapes dashes
        f"0::/kubepods.slice/kubepods-burstable-pod{UID}.slice/{CID}",  # systemd always does
        f"0::/kubepods.slice/kubepods-burstable-pod{SYSTEMD_UID}.scope/{CID}",
        f"/kubepods/burstable/pod{UID}/{CID}",  # no hierarchy fields
        f"garbage pod{UID}",
        "\x00\x01binary",
    ],
)
def test_anything_else_is_no_pod(cgroup: str) -> None:
    assert pod_uid_of(cgroup) is None


def test_proc_pods_reads_the_cgroup_file_under_its_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(f"0::/kubepods/burstable/pod{UID}/{CID}\n")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cgroup").write_text("0::/init.scope\n")
    pods = ProcPods(tmp_path)
    assert pods.pod_uid(4242) == UID
    assert pods.pod_uid(1) is None


def test_a_process_that_has_exited_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):  # noqa: PT011 - any OSError: gone, or not visible
        ProcPods(tmp_path).pod_uid(4243)
