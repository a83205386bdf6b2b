"""The device plugin as one object the daemon starts and stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import structlog

from mipart.agent.deviceplugin import cdi
from mipart.agent.deviceplugin.allocations import AllocationMissing, Allocations
from mipart.agent.deviceplugin.launchers import LauncherSockets, key_of
from mipart.agent.deviceplugin.podresources import Holder, PodResources
from mipart.agent.deviceplugin.registration import PluginEndpoint
from mipart.agent.deviceplugin.servicer import DevicePluginService
from mipart.agent.deviceplugin.slots import MIN_SLOTS, Slots
from mipart.agent.partitions.manager import PartitionManager
from mipart.contract.resources import PARTITION_RESOURCE

log = structlog.get_logger(__name__)

DEFAULT_CDI_DIR = Path("/var/run/cdi")


class DevicePlugin:
    def __init__(
        self,
        manager: PartitionManager,
        allocations: Allocations,
        *,
        plugin_dir: Path,
        pod_resources_socket: Path,
        cdi_dir: Path = DEFAULT_CDI_DIR,
        launchers: LauncherSockets | None = None,
        min_slots: int = MIN_SLOTS,
        check_interval_s: float = 1.0,
        cleanup_interval_s: float = 30.0,
    ) -> None:
        self._manager = manager
        self._allocations = allocations
        self._launchers = launchers
        self._cdi_dir = cdi_dir
        self._pod_resources = PodResources(pod_resources_socket, PARTITION_RESOURCE)
        self.slots = Slots(min_slots)
        service = DevicePluginService(
            self.slots,
            self._pod_resources,
            allocations,
            lambda: manager.status().inventory,
            cdi_dir,
            launchers=launchers,
        )
        self.endpoint = PluginEndpoint(service, plugin_dir, PARTITION_RESOURCE)
        self._check_interval_s = check_interval_s
        self._cleanup_interval_s = cleanup_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-plugin", daemon=True)

    def start(self) -> None:
        self._manager.add_listener(self.slots.observe)
        self.slots.observe(self._manager.status())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.slots.close()
        self._thread.join(timeout=10)
        self.endpoint.stop()

    def _run(self) -> None:
        # At once, then every interval: a restarted daemon serves the start-up lock sockets
        # of the pods already running before their launchers give up on them.
        next_cleanup = time.monotonic()
        while not self._stop.is_set():
            try:
                self.endpoint.check()
                if time.monotonic() >= next_cleanup:
                    next_cleanup = time.monotonic() + self._cleanup_interval_s
                    self.cleanup()
            except Exception:
                log.exception("deviceplugin.loop_failed")
            self._stop.wait(self._check_interval_s)

    def cleanup(self) -> None:
        """Remove the CDI specs of slots no container holds any more, and the start-up lock
        sockets of pods that hold none; serve those of pods that do (after a restart).

        A slot is handed out again only after the kubelet has freed it, and its next holder's
        PreStartContainer rewrites the spec, so this only tidies up; it never races a start.
        """
        try:
            holders = self._pod_resources.holders()
        except grpc.RpcError as err:
            log.info("deviceplugin.cleanup_skipped", error=f"{err.code().name} {err.details()}")
            return
        held = {s for h in holders for s in h.slots}
        for slot in cdi.written_slots(self._cdi_dir) - held:
            cdi.remove(self._cdi_dir, slot)
            log.info("deviceplugin.cdi_removed", slot=slot)
        if self._launchers is not None:
            self._serve_launchers([h for h in holders if h.slots])

    def _serve_launchers(self, holders: list[Holder]) -> None:
        assert self._launchers is not None
        inventory = self._manager.status().inventory
        for holder in holders:
            if inventory is None:
                break
            try:
                allocation = self._allocations.of(holder.namespace, holder.pod)
                pools = frozenset(cdi.memory_pools(allocation, inventory))
            except (AllocationMissing, cdi.UnknownPartition) as err:
                log.info("deviceplugin.launcher_skipped", pod=holder.key, reason=str(err))
                continue
            self._launchers.open(key_of(holder.namespace, holder.pod), holder.key, pools)
        self._launchers.retain({key_of(h.namespace, h.pod) for h in holders})
