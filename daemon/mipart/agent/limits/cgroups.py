"""Which pod a process belongs to, from the cgroup the kubelet put it in.

amdsmi names GPU processes by pid; the kubelet runs each pod's containers under a cgroup that
carries the pod's UID, in one of two spellings:

- cgroupfs driver: ``/kubepods/burstable/pod8dbc5577-d0e2-4706-8787-57d52c03ddf2/<container>``
- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod8dbc5577_d0e2_4706_8787_57d52c03ddf2.slice/cri-containerd-<id>.scope``
  (systemd escapes "-" in a unit name, so the UID's dashes become underscores)

under cgroup v1 (one line per hierarchy) or v2 (one ``0::`` line). The pod segment is matched
wherever it is, not only under a leading ``/kubepods``: the kubelet's ``--cgroup-root`` (kind
nests everything under ``/kubelet.slice``) and a reader in its own cgroup namespace (paths
such as ``/../../pod<uid>/<id>``) move it. A UUID is required, so nothing else looks like one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path


def _uuid(sep: str) -> str:
    return sep.join(f"[0-9a-f]{{{n}}}" for n in (8, 4, 4, 4, 12))


_CGROUPFS_POD = re.compile(f"pod({_uuid('-')})")
_SYSTEMD_POD = re.compile(rf"(?:[a-z]+-)*pod({_uuid('_')})\.slice")


def pod_uid_of(cgroup: str) -> str | None:
    """The pod UID in the text of a ``/proc/<pid>/cgroup`` file, or None if the process is
    not in a pod's cgroup (a host process, a container run outside Kubernetes)."""
    for line in cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for segment in reversed(parts[2].split("/")):
            if found := _CGROUPFS_POD.fullmatch(segment):
                return found.group(1)
            if found := _SYSTEMD_POD.fullmatch(segment):
                return found.group(1).replace("_", "-")
    return None


class ProcPods:
    """Reads ``<root>/<pid>/cgroup``; ``root`` is the host's /proc (in a DaemonSet, mounted
    from the host, since amdsmi reports pids of the host's PID namespace)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def pod_uid(self, pid: int) -> str | None:
        """Raises OSError when the process is gone (or not visible under ``root``)."""
        text = (self._root / str(pid) / "cgroup").read_text(errors="replace")
        return pod_uid_of(text)

    def pods_of(self, pids: Iterable[int]) -> tuple[dict[int, str], dict[int, str]]:
        """pid -> pod UID for the pids in a pod's cgroup, and pid -> why for the others."""
        pods: dict[int, str] = {}
        why: dict[int, str] = {}
        for pid in set(pids):
            try:
                uid = self.pod_uid(pid)
            except OSError as err:
                why[pid] = f"no readable cgroup ({err.strerror or err}): exited, or not in our view"
                continue
            if uid is None:
                why[pid] = "not in a pod's cgroup"
            else:
                pods[pid] = uid
        return pods, why
