"""What the real amdsmi package reads from the emulated node: inventory, identity, VRAM, processes,
telemetry."""

from __future__ import annotations

MIB = 1024 * 1024
SPX_VRAM_MIB = 196592
CPX_VRAM_MIB = SPX_VRAM_MIB // 8  # 24574 MiB, "24 GB"
BUSES = ["05", "26", "46", "65", "85", "a6", "c6", "e5"]

# Status codes (amdsmi_wrapper.AMDSMI_STATUS_*).
NOT_SUPPORTED, NOT_FOUND, NOT_INIT = 2, 31, 32


def test_fresh_node_is_eight_spx_mi300x(emu):
    r = emu.run(
        """
        socks = amdsmi_get_socket_handles()
        hs = amdsmi_get_processor_handles()
        result = {
            "sockets": len(socks),
            "processors": len(hs),
            "socket_info": [amdsmi_get_socket_info(s) for s in socks],
            "asic": [amdsmi_get_gpu_asic_info(h) for h in hs],
            "vram_total": [amdsmi_get_gpu_memory_total(h, AmdSmiMemoryType.VRAM) for h in hs],
            "vram_usage": [amdsmi_get_gpu_vram_usage(h) for h in hs],
            "compute": [amdsmi_get_gpu_compute_partition(h) for h in hs],
            "memory": [amdsmi_get_gpu_memory_partition(h) for h in hs],
            "bdf": [amdsmi_get_gpu_device_bdf(h) for h in hs],
            "enum": [amdsmi_get_gpu_enumeration_info(h) for h in hs],
            "type": amdsmi_get_processor_type(hs[0])["processor_type"],
            "xcds": amdsmi_get_gpu_xcd_counter(hs[0]),
        }
        """
    )
    assert r["sockets"] == 8
    assert r["processors"] == 8
    assert r["type"] == "AMDSMI_PROCESSOR_TYPE_AMD_GPU"
    assert r["xcds"] == 8
    for asic in r["asic"]:
        assert asic["market_name"] == "AMD Instinct MI300X"
        assert asic["vendor_id"] == "0x1002"
        assert asic["device_id"] == "0x74a1"
        assert asic["target_graphics_version"] == "gfx942"
        assert asic["num_compute_units"] == 304
    assert r["vram_total"] == [SPX_VRAM_MIB * MIB] * 8
    assert all(u == {"vram_total": SPX_VRAM_MIB, "vram_used": 0} for u in r["vram_usage"])
    assert r["compute"] == ["SPX"] * 8
    assert r["memory"] == ["NPS1"] * 8
    assert r["bdf"] == [f"0000:{bus}:00.0" for bus in BUSES]
    assert r["socket_info"] == r["bdf"]
    assert [e["drm_render"] for e in r["enum"]] == [128 + 8 * n for n in range(8)]
    assert [e["hip_id"] for e in r["enum"]] == list(range(8))


def test_identity_is_distinct_per_gpu_and_stable_across_processes(emu):
    snippet = """
        hs = amdsmi_get_processor_handles()
        result = {
            "uuid": [amdsmi_get_gpu_device_uuid(h) for h in hs],
            "hip_uuid": [amdsmi_get_gpu_enumeration_info(h)["hip_uuid"] for h in hs],
            "kfd": [amdsmi_get_gpu_kfd_info(h) for h in hs],
            "serial": [amdsmi_get_gpu_asic_info(h)["asic_serial"] for h in hs],
        }
    """
    first, second = emu.run(snippet), emu.run(snippet)
    assert first == second
    for key in ("uuid", "hip_uuid", "serial"):
        assert len(set(first[key])) == 8
    assert all(len(u) == 36 for u in first["uuid"])
    assert len({k["kfd_id"] for k in first["kfd"]}) == 8
    assert len({k["node_id"] for k in first["kfd"]}) == 8


def test_processor_handle_from_bdf(emu):
    r = emu.run(
        """
        hs = amdsmi_get_processor_handles()
        found = amdsmi_get_processor_handle_from_bdf("0000:26:00.0")
        result = {
            "same": found.value == hs[1].value,
            "short_form": amdsmi_get_processor_handle_from_bdf("a6:00.0").value == hs[5].value,
            "missing_function": code(amdsmi_get_processor_handle_from_bdf, "0000:26:00.3"),
            "missing_bus": code(amdsmi_get_processor_handle_from_bdf, "0000:27:00.0"),
        }
        """
    )
    assert r == {
        "same": True,
        "short_form": True,
        "missing_function": NOT_FOUND,
        "missing_bus": NOT_FOUND,
    }


def test_fake_processes_show_in_vram_process_list_and_activity(emu):
    emu.cli(
        "ps",
        "add",
        "--gpu",
        "2",
        "--pid",
        "4242",
        "--name",
        "vllm serve llama",
        "--vram",
        "10G",
        "--busy",
        "50",
    )
    emu.cli("ps", "add", "--gpu", "2", "--pid", "4343", "--name", "python", "--vram", "512M")
    r = emu.run(
        """
        def kfd_gpus(pid):
            c = amdsmi_wrapper.ctypes
            n = c.c_uint32(8)
            out = (c.c_uint32 * 8)()
            assert amdsmi_wrapper.amdsmi_get_gpu_compute_process_gpus(pid, out, c.byref(n)) == 0
            return list(out[: n.value])

        HOTSPOT, NOW = AmdSmiTemperatureType.HOTSPOT, AmdSmiTemperatureMetric.CURRENT
        hs = amdsmi_get_processor_handles()
        h, idle = hs[2], hs[3]
        result = {
            "procs": amdsmi_get_gpu_process_list(h),
            "idle_procs": amdsmi_get_gpu_process_list(idle),
            "used": amdsmi_get_gpu_memory_usage(h, AmdSmiMemoryType.VRAM),
            "usage": amdsmi_get_gpu_vram_usage(h),
            "activity": amdsmi_get_gpu_activity(h),
            "idle_activity": amdsmi_get_gpu_activity(idle),
            "hot": amdsmi_get_temp_metric(h, HOTSPOT, NOW),
            "cold": amdsmi_get_temp_metric(idle, HOTSPOT, NOW),
            "mem_temp": amdsmi_get_temp_metric(h, AmdSmiTemperatureType.VRAM, NOW),
            "power": amdsmi_get_power_info(h)["current_socket_power"],
            "idle_power": amdsmi_get_power_info(idle)["current_socket_power"],
            "kfd": amdsmi_get_gpu_compute_process_info(),
            "kfd_pid": amdsmi_get_gpu_compute_process_info_by_pid(4242),
            # amdsmi 7.0.2's Python wrapper of this call breaks on a non-empty answer
            # ('int' object has no attribute 'value'), so the C symbol is called directly.
            "kfd_gpus": kfd_gpus(4242),
            "kfd_missing": code(amdsmi_get_gpu_compute_process_info_by_pid, 999),
            "metrics": amdsmi_get_gpu_metrics_info(h)["xcp_stats.gfx_busy_inst"][0],
        }
        """
    )
    by_pid = {p["pid"]: p for p in r["procs"]}
    assert set(by_pid) == {4242, 4343}
    assert by_pid[4242]["name"] == "vllm serve llama"
    assert by_pid[4242]["memory_usage"]["vram_mem"] == 10 * 1024 * MIB
    assert by_pid[4242]["mem"] == 10 * 1024 * MIB
    assert by_pid[4343]["memory_usage"]["vram_mem"] == 512 * MIB
    assert r["idle_procs"] == []
    assert r["used"] == 10 * 1024 * MIB + 512 * MIB
    assert r["usage"] == {"vram_total": SPX_VRAM_MIB, "vram_used": 10240 + 512}
    assert r["activity"]["gfx_activity"] == 50
    assert r["idle_activity"]["gfx_activity"] == 0
    assert r["hot"] > r["cold"] >= 30
    assert 30 <= r["mem_temp"] <= 100
    assert 140 <= r["idle_power"] < r["power"] <= 750
    assert {p["process_id"] for p in r["kfd"]} == {4242, 4343}
    assert r["kfd_pid"]["vram_usage"] == 10 * 1024 * MIB
    assert r["kfd_gpus"] == [2]
    assert r["kfd_missing"] == NOT_FOUND
    assert r["metrics"] == [50] * 8


def test_changes_from_another_process_are_seen_live(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        before = amdsmi_get_gpu_memory_usage(h, AmdSmiMemoryType.VRAM)
        cli("ps", "add", "--gpu", "0", "--pid", "77", "--name", "late", "--vram", "1G")
        after = amdsmi_get_gpu_memory_usage(h, AmdSmiMemoryType.VRAM)
        cli("ps", "rm", "--pid", "77")
        result = [before, after, amdsmi_get_gpu_memory_usage(h, AmdSmiMemoryType.VRAM)]
        """
    )
    assert r == [0, 1024 * MIB, 0]


def test_secondary_partitions_have_no_device_telemetry(emu):
    r = emu.run(
        """
        h0 = amdsmi_get_processor_handles()[0]
        amdsmi_set_gpu_compute_partition(h0, AmdSmiComputePartitionType.CPX)
        hs = gpu_handles(amdsmi_get_socket_handles()[0])
        hot = AmdSmiTemperatureType.HOTSPOT, AmdSmiTemperatureMetric.CURRENT
        result = {
            "primary_power": amdsmi_get_power_info(hs[0])["current_socket_power"],
            "secondary_power": amdsmi_get_power_info(hs[1])["current_socket_power"],
            "primary_temp": amdsmi_get_temp_metric(hs[0], *hot),
            "secondary_temp": code(amdsmi_get_temp_metric, hs[1], *hot),
            "secondary_metrics": code(amdsmi_get_gpu_metrics_info, hs[1]),
            "secondary_activity": amdsmi_get_gpu_activity(hs[1])["gfx_activity"],
            "num_partition": amdsmi_get_gpu_metrics_info(hs[0])["num_partition"],
        }
        """
    )
    assert isinstance(r["primary_power"], int)
    assert r["secondary_power"] == "N/A"
    assert isinstance(r["primary_temp"], int)
    assert r["secondary_temp"] == NOT_SUPPORTED
    assert r["secondary_metrics"] == NOT_SUPPORTED
    assert r["secondary_activity"] == 0
    assert r["num_partition"] == 8


def test_xgmi_topology(emu):
    r = emu.run(
        """
        hs = amdsmi_get_processor_handles()
        result = {
            "link": amdsmi_topo_get_link_type(hs[0], hs[7]),
            "weight": amdsmi_topo_get_link_weight(hs[0], hs[7]),
            "p2p": amdsmi_is_P2P_accessible(hs[0], hs[7]),
            "numa": [amdsmi_topo_get_numa_node_number(h) for h in hs],
        }
        """
    )
    assert r["link"] == {"hops": 1, "type": 2}  # AMDSMI_LINK_TYPE_XGMI
    assert r["weight"] == 15
    assert r["p2p"] is True
    assert r["numa"] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_init_is_reference_counted(emu):
    r = emu.run(
        """
        before = code(amdsmi_get_socket_handles)
        amdsmi_init()
        amdsmi_init()
        amdsmi_shut_down()
        still = len(amdsmi_get_socket_handles())
        amdsmi_shut_down()
        result = [before, still, code(amdsmi_get_socket_handles), code(amdsmi_gpu_driver_reload)]
        """,
        init=False,
    )
    assert r == [NOT_INIT, 8, NOT_INIT, NOT_INIT]


def test_symbols_without_an_implementation_answer_not_supported(emu):
    r = emu.run(
        """
        h = amdsmi_get_processor_handles()[0]
        result = [
            code(amdsmi_get_gpu_fan_speed, h, 0),
            code(amdsmi_get_gpu_ecc_enabled, h),
            amdsmi_wrapper.amdsmi_reset_gpu(h),
        ]
        """
    )
    assert r == [NOT_SUPPORTED] * 3
