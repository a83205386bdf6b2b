"""The device plugin as one object the daemon starts and stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import structlog

from mipart.agent.deviceplugin import cdi
from mipart.agent.deviceplugin.allocations import Allocations
from mipart.agent.deviceplugin.podresources import PodResources
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
        launcher_socket: Path | None = None,
        min_slots: int = MIN_SLOTS,
        check_interval_s: float = 1.0,
        cleanup_interval_s: float = 30.0,
    ) -> None:
        self._manager = manager
        self._cdi_dir = cdi_dir
        self._pod_resources = PodResources(pod_resources_socket, PARTITION_RESOURCE)
        self.slots = Slots(min_slots)
        service = DevicePluginService(
            self.slots,
            self._pod_resources,
            allocations,
            lambda: manager.status().inventory,
            cdi_dir,
            launcher_socket=launcher_socket,
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
        next_cleanup = time.monotonic() + self._cleanup_interval_s
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
        """Remove the CDI specs of slots no container holds any more.

        A slot is handed out again only after the kubelet has freed it, and its next holder's
        PreStartContainer rewrites the spec, so this only tidies up; it never races a start.
        """
        try:
            held = {s for h in self._pod_resources.holders() for s in h.slots}
        except grpc.RpcError as err:
            log.info("deviceplugin.cleanup_skipped", error=f"{err.code().name} {err.details()}")
            return
        for slot in cdi.written_slots(self._cdi_dir) - held:
            cdi.remove(self._cdi_dir, slot)
            log.info("deviceplugin.cdi_removed", slot=slot)
