"""Compute and memory partitioning through the real amdsmi package, as the daemon will drive it."""

from __future__ import annotations

MIB = 1024 * 1024
CPX_VRAM = 196592 // 8 * MIB  # 24574 MiB per CPX partition

INVAL, NOT_SUPPORTED, BUSY, NOT_FOUND = 1, 2, 30, 31
RESTART_ERR, SETTING_UNAVAILABLE = 54, 55

# Reads the whole node: per GPU its compute mode and partitions' identities.
SNAPSHOT = """
def snapshot():
    gpus = []
    for sock in amdsmi_get_socket_handles():
        hs = gpu_handles(sock)
        gpus.append({
            "mode": amdsmi_get_gpu_compute_partition(hs[0]),
            "memory": amdsmi_get_gpu_memory_partition(hs[0]),
            "partitions": [{
                "bdf": amdsmi_get_gpu_device_bdf(h),
                "uuid": amdsmi_get_gpu_device_uuid(h),
                "render": amdsmi_get_gpu_enumeration_info(h)["drm_render"],
                "hip_id": amdsmi_get_gpu_enumeration_info(h)["hip_id"],
                "partition_id": amdsmi_get_gpu_kfd_info(h)["current_partition_id"],
                "cus": amdsmi_get_gpu_asic_info(h)["num_compute_units"],
                "vram": amdsmi_get_gpu_memory_total(h, AmdSmiMemoryType.VRAM),
            } for h in hs],
        })
    return gpus
"""


def test_cpx_on_one_gpu_gives_eight_24gb_partitions_and_leaves_the_others(emu):
    r = emu.run(
        setup=SNAPSHOT,
        snippet="""
        old = amdsmi_get_processor_handles()
        amdsmi_set_gpu_compute_partition(old[0], AmdSmiComputePartitionType.CPX)
        result = {
            "snapshot": snapshot(),
            "processors": len(amdsmi_get_processor_handles()),
            "stale_gpu0": code(amdsmi_get_gpu_asic_info, old[0]),
            "gpu1_still_valid": amdsmi_get_gpu_compute_partition(old[1]),
            "xcds": amdsmi_get_gpu_xcd_counter(amdsmi_get_processor_handles()[3]),
        }
        """,
    )
    gpus = r["snapshot"]
    assert r["processors"] == 8 + 7
    gpu0 = gpus[0]
    assert gpu0["mode"] == "CPX"
    assert len(gpu0["partitions"]) == 8
    parts = gpu0["partitions"]
    assert [p["vram"] for p in parts] == [CPX_VRAM] * 8
    assert [p["cus"] for p in parts] == [38] * 8
    assert [p["bdf"] for p in parts] == [f"0000:05:00.{f}" for f in range(8)]
    assert [p["render"] for p in parts] == list(range(128, 136))
    assert [p["partition_id"] for p in parts] == list(range(8))
    assert [p["hip_id"] for p in parts] == list(range(8))
    all_uuids = [p["uuid"] for g in gpus for p in g["partitions"]]
    assert len(set(all_uuids)) == len(all_uuids) == 15
    for n, gpu in enumerate(gpus[1:], start=1):
        assert gpu["mode"] == "SPX"
        assert len(gpu["partitions"]) == 1
        assert gpu["partitions"][0]["cus"] == 304
        assert gpu["partitions"][0]["render"] == 128 + 8 * n
        assert gpu["partitions"][0]["hip_id"] == 7 + n
    # A handle from before the change of its GPU is stale; other GPUs' handles stay valid.
    assert r["stale_gpu0"] == NOT_FOUND
    assert r["gpu1_still_valid"] == "SPX"
    assert r["xcds"] == 1


def test_every_compute_mode_under_nps1(emu):
    r = emu.run(
        """
        out = {}
        for mode in ("DPX", "QPX", "CPX", "SPX"):
            h = amdsmi_get_processor_handles()[0]
            amdsmi_set_gpu_compute_partition(h, AmdSmiComputePartitionType[mode])
            hs = gpu_handles(amdsmi_get_socket_handles()[0])
            out[mode] = [len(hs), amdsmi_get_gpu_vram_usage(hs[-1])["vram_total"],
                         amdsmi_get_gpu_asic_info(hs[-1])["num_compute_units"]]
        h = amdsmi_get_processor_handles()[0]
        out["TPX"] = code(amdsmi_set_gpu_compute_partition, h, AmdSmiComputePartitionType.TPX)
        out["INVALID"] = amdsmi_wrapper.amdsmi_set_gpu_compute_partition(h, 9)
        result = out
        """
    )
    assert r["DPX"] == [2, 98296, 152]
    assert r["QPX"] == [4, 49148, 76]
    assert r["CPX"] == [8, 24574, 38]
    assert r["SPX"] == [1, 196592, 304]
    assert r["TPX"] == SETTING_UNAVAILABLE
    assert r["INVALID"] == INVAL


def test_compute_change_with_a_process_is_busy_and_changes_nothing(emu):
    emu.cli("ps", "add", "--gpu", "0", "--pid", "100", "--name", "vllm", "--vram", "20G")
    r = emu.run(
        """
        hs = amdsmi_get_processor_handles()
        busy = code(amdsmi_set_gpu_compute_partition, hs[0], AmdSmiComputePartitionType.CPX)
        busy_profile = code(amdsmi_set_gpu_accelerator_partition_profile, hs[0], 3)
        after = [len(amdsmi_get_processor_handles()), amdsmi_get_gpu_compute_partition(hs[0])]
        other = code(amdsmi_set_gpu_compute_partition, hs[1], AmdSmiComputePartitionType.DPX)
        result = {"busy": busy, "busy_profile": busy_profile, "after": after, "other": other}
        """
    )
    assert r["busy"] == BUSY
    assert r["busy_profile"] == BUSY
    assert r["after"] == [8, "SPX"]  # the handle is still valid: nothing changed
    assert r["other"] == 0  # KFD's busy check is per device
    emu.cli("ps", "rm", "--pid", "100")
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        result = code(amdsmi_set_gpu_compute_partition, h, AmdSmiComputePartitionType.CPX)
        """
    )
    assert r == 0


def test_nps4_is_pending_until_reload_and_reload_resets_compute_to_cpx(emu):
    r = emu.run(
        setup=SNAPSHOT,
        snippet="""
        hs = amdsmi_get_processor_handles()
        amdsmi_set_gpu_compute_partition(hs[1], AmdSmiComputePartitionType.DPX)
        hs = amdsmi_get_processor_handles()
        amdsmi_set_gpu_memory_partition(hs[0], AmdSmiMemoryPartitionType.NPS4)
        result = {
            "memory_now": [amdsmi_get_gpu_memory_partition(h) for h in hs],
            "config": amdsmi_get_gpu_memory_partition_config(hs[0]),
            "compute_now": [amdsmi_get_gpu_compute_partition(h) for h in hs][:3],
            "handles_valid": code(amdsmi_get_gpu_asic_info, hs[0]),
        }
        """,
    )
    assert r["memory_now"] == ["NPS1"] * 9
    assert r["config"]["mp_mode"] == "NPS1"
    assert r["config"]["partition_caps"] == ["NPS1", "NPS4"]
    assert r["compute_now"] == ["SPX", "DPX", "DPX"]
    assert r["handles_valid"] == 0
    assert "pending_memory_mode NPS4" in emu.state.read_text()
    assert "pending: NPS4" in emu.cli("show").stdout

    emu.cli("ps", "add", "--gpu", "5", "--pid", "9", "--name", "holdout", "--vram", "1G")
    r = emu.run("result = code(amdsmi_gpu_driver_reload)")
    assert r == RESTART_ERR
    assert "pending_memory_mode NPS4" in emu.state.read_text()

    emu.cli("ps", "rm", "--all")
    r = emu.run(
        setup=SNAPSHOT,
        snippet="""
        old_proc = amdsmi_get_processor_handles()
        old_sock = amdsmi_get_socket_handles()
        amdsmi_gpu_driver_reload()
        result = {
            "snapshot": snapshot(),
            "stale_processor": code(amdsmi_get_gpu_compute_partition, old_proc[0]),
            "stale_socket": code(amdsmi_get_socket_info, old_sock[0]),
            "spx": code(amdsmi_set_gpu_compute_partition, amdsmi_get_processor_handles()[0],
                        AmdSmiComputePartitionType.SPX),
            "dpx": code(amdsmi_set_gpu_compute_partition, amdsmi_get_processor_handles()[0],
                        AmdSmiComputePartitionType.DPX),
            "qpx": code(amdsmi_set_gpu_compute_partition, amdsmi_get_processor_handles()[0],
                        AmdSmiComputePartitionType.QPX),
        }
        """,
    )
    gpus = r["snapshot"]
    assert [g["mode"] for g in gpus] == ["CPX"] * 8
    assert [g["memory"] for g in gpus] == ["NPS4"] * 8
    assert all(p["vram"] == CPX_VRAM for g in gpus for p in g["partitions"])
    assert sum(len(g["partitions"]) for g in gpus) == 64
    assert r["stale_processor"] == NOT_FOUND
    assert r["stale_socket"] == NOT_FOUND
    assert r["spx"] == SETTING_UNAVAILABLE
    assert r["dpx"] == SETTING_UNAVAILABLE
    assert r["qpx"] == 0
    assert "pending_memory_mode none" in emu.state.read_text()


def test_back_to_nps1_needs_a_reload_and_gives_spx(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        amdsmi_set_gpu_memory_partition_mode(h, AmdSmiMemoryPartitionType.NPS4)
        amdsmi_gpu_driver_reload()
        h = amdsmi_get_processor_handles()[0]
        amdsmi_set_gpu_memory_partition(h, AmdSmiMemoryPartitionType.NPS1)
        still_cpx = amdsmi_get_gpu_compute_partition(h)
        amdsmi_gpu_driver_reload()
        hs = amdsmi_get_processor_handles()
        result = [still_cpx, len(hs), amdsmi_get_gpu_compute_partition(hs[0]),
                  amdsmi_get_gpu_memory_partition(hs[0])]
        """
    )
    assert r == ["CPX", 8, "SPX", "NPS1"]


def test_unsupported_memory_modes(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        result = {
            "nps8": code(amdsmi_set_gpu_memory_partition, h, AmdSmiMemoryPartitionType.NPS8),
            "nps2": code(amdsmi_set_gpu_memory_partition, h, AmdSmiMemoryPartitionType.NPS2),
            "bogus": amdsmi_wrapper.amdsmi_set_gpu_memory_partition(h, 3),
        }
        """
    )
    assert r == {"nps8": NOT_SUPPORTED, "nps2": NOT_SUPPORTED, "bogus": INVAL}
    assert "pending_memory_mode none" in emu.state.read_text()


def test_nps2_with_the_capability_gives_dpx(emu):
    emu.cli("reset", "--caps", "NPS1,NPS2,NPS4")
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        caps = amdsmi_get_gpu_memory_partition_config(h)["partition_caps"]
        amdsmi_set_gpu_memory_partition(h, AmdSmiMemoryPartitionType.NPS2)
        amdsmi_gpu_driver_reload()
        hs = amdsmi_get_processor_handles()
        result = {
            "caps": caps,
            "modes": sorted({amdsmi_get_gpu_compute_partition(h) for h in hs}),
            "count": len(hs),
            "qpx": code(amdsmi_set_gpu_compute_partition, hs[0], AmdSmiComputePartitionType.QPX),
        }
        """
    )
    assert r == {
        "caps": ["NPS1", "NPS2", "NPS4"],
        "modes": ["DPX"],
        "count": 16,
        "qpx": SETTING_UNAVAILABLE,
    }


def test_accelerator_partition_profiles(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        config = amdsmi_get_gpu_accelerator_partition_profile_config(h)
        amdsmi_set_gpu_accelerator_partition_profile(h, 3)
        hs = gpu_handles(amdsmi_get_socket_handles()[0])
        result = {
            "profiles": [
                (p["profile_type"], p["profile_index"], p["num_partitions"], p["memory_caps"])
                for p in config["profiles"]
            ],
            "default": config["default_profile_index"],
            "current": [amdsmi_get_gpu_accelerator_partition_profile(x) for x in hs[:3]],
            "bad_index": code(amdsmi_set_gpu_accelerator_partition_profile, hs[0], 7),
        }
        """
    )
    assert r["profiles"] == [
        ["SPX", 0, 1, ["NPS1"]],
        ["DPX", 1, 2, ["NPS1"]],
        ["QPX", 2, 4, ["NPS1", "NPS4"]],
        ["CPX", 3, 8, ["NPS1", "NPS4"]],
    ]
    assert r["default"] == 0
    assert [c["partition_id"] for c in r["current"]] == [[0], [1], [2]]
    assert all(c["partition_profile"]["profile_type"] == "CPX" for c in r["current"])
    assert r["bad_index"] == INVAL


def test_modes_survive_a_daemon_restart(emu):
    emu.run(
        """
        hs = amdsmi_get_processor_handles()
        amdsmi_set_gpu_compute_partition(hs[3], AmdSmiComputePartitionType.QPX)
        amdsmi_set_gpu_memory_partition(hs[0], AmdSmiMemoryPartitionType.NPS4)
        amdsmi_shut_down()
        """
    )
    r = emu.run(
        """
        hs = amdsmi_get_processor_handles()
        result = [len(hs), [amdsmi_get_gpu_compute_partition(h) for h in hs][3]]
        """
    )
    assert r == [11, "QPX"]
    assert "pending_memory_mode NPS4" in emu.state.read_text()


def test_reboot_reverts_to_spx_nps1(emu):
    emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        amdsmi_set_gpu_memory_partition(h, AmdSmiMemoryPartitionType.NPS4)
        amdsmi_gpu_driver_reload()
        h = amdsmi_get_processor_handles()[0]
        amdsmi_set_gpu_memory_partition(h, AmdSmiMemoryPartitionType.NPS1)
        """
    )
    emu.cli(
        "ps", "add", "--gpu", "1", "--partition", "7", "--pid", "5", "--name", "x", "--vram", "1G"
    )
    emu.cli("reboot")
    r = emu.run(
        """
        hs = amdsmi_get_processor_handles()
        result = [len(hs), sorted({amdsmi_get_gpu_compute_partition(h) for h in hs}),
                  amdsmi_get_gpu_memory_partition(hs[0]), amdsmi_get_gpu_process_list(hs[1])]
        """
    )
    assert r == [8, ["SPX"], "NPS1", []]
    text = emu.state.read_text()
    assert "pending_memory_mode none" in text
    assert "proc " not in text


def test_reload_with_nothing_pending_still_resets_compute_modes(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[2]
        amdsmi_set_gpu_compute_partition(h, AmdSmiComputePartitionType.CPX)
        amdsmi_gpu_driver_reload()
        result = len(amdsmi_get_processor_handles())
        """
    )
    assert r == 8


def test_reload_delay_comes_from_the_state_unless_the_env_overrides_it(emu):
    emu.cli("set-reload-delay", "0.2")
    assert "reload_delay_s 0.2" in emu.state.read_text()
    r = emu.run(
        """
        amdsmi_gpu_driver_reload()
        result = len(amdsmi_get_processor_handles())
        """,
        env={"MIPART_EMULATOR_RELOAD_SECONDS": ""},
    )
    assert r == 8
