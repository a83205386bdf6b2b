/*
 * Prints the size and field offsets of every struct in include/amdsmi_abi.h as JSON, for
 * tools/check_layout.py to compare with the ctypes classes of the installed amdsmi wheel.
 * Each entry names the ctypes class it must match.
 */
#include <stddef.h>
#include <stdio.h>

#include "amdsmi_abi.h"

static int first_struct = 1, first_field;

static void begin(const char *ctypes_name, size_t size, int partial)
{
    printf("%s\n  \"%s\": {\"size\": %zu, \"partial\": %s, \"fields\": {", first_struct ? "{" : ",",
           ctypes_name, size, partial ? "true" : "false");
    first_struct = 0;
    first_field = 1;
}

static void field(const char *name, size_t offset, size_t size)
{
    printf("%s\"%s\": [%zu, %zu]", first_field ? "" : ", ", name, offset, size);
    first_field = 0;
}

static void end(void)
{
    printf("}}");
}

#define BEGIN(T, ctypes_name) begin(ctypes_name, sizeof(T), 0)
#define BEGIN_PARTIAL(T, ctypes_name) begin(ctypes_name, sizeof(T), 1)
#define F(T, f) field(#f, offsetof(T, f), sizeof(((T *)0)->f))

int main(void)
{
    /* Unions of bit-fields: only size and the integer view are compared. */
    BEGIN_PARTIAL(amdsmi_bdf_t, "union_amdsmi_bdf_t");
    F(amdsmi_bdf_t, as_uint);
    end();
    BEGIN_PARTIAL(amdsmi_nps_caps_t, "union_amdsmi_nps_caps_t");
    F(amdsmi_nps_caps_t, nps_cap_mask);
    end();

#define T amdsmi_enumeration_info_t
    BEGIN(T, "struct_amdsmi_enumeration_info_t");
    F(T, drm_render); F(T, drm_card); F(T, hsa_id); F(T, hip_id); F(T, hip_uuid);
    end();
#undef T
#define T amdsmi_asic_info_t
    BEGIN(T, "struct_amdsmi_asic_info_t");
    F(T, market_name); F(T, vendor_id); F(T, vendor_name); F(T, subvendor_id); F(T, device_id);
    F(T, rev_id); F(T, asic_serial); F(T, oam_id); F(T, num_of_compute_units); F(T, PADDING_0);
    F(T, target_graphics_version); F(T, subsystem_id); F(T, reserved);
    end();
#undef T
#define T amdsmi_kfd_info_t
    BEGIN(T, "struct_amdsmi_kfd_info_t");
    F(T, kfd_id); F(T, node_id); F(T, current_partition_id); F(T, reserved);
    end();
#undef T
#define T amdsmi_numa_range_t
    BEGIN(T, "struct_numa_range_");
    F(T, memory_type); F(T, PADDING_0); F(T, start); F(T, end);
    end();
#undef T
#define T amdsmi_memory_partition_config_t
    BEGIN(T, "struct_amdsmi_memory_partition_config_t");
    F(T, partition_caps); F(T, mp_mode); F(T, num_numa_ranges); F(T, PADDING_0); F(T, numa_range);
    F(T, reserved);
    end();
#undef T
#define T amdsmi_accelerator_partition_profile_t
    BEGIN(T, "struct_amdsmi_accelerator_partition_profile_t");
    F(T, profile_type); F(T, num_partitions); F(T, memory_caps); F(T, profile_index);
    F(T, num_resources); F(T, resources); F(T, PADDING_0); F(T, reserved);
    end();
#undef T
#define T amdsmi_accelerator_partition_resource_profile_t
    BEGIN(T, "struct_amdsmi_accelerator_partition_resource_profile_t");
    F(T, profile_index); F(T, resource_type); F(T, partition_resource);
    F(T, num_partitions_share_resource); F(T, reserved);
    end();
#undef T
#define T amdsmi_accelerator_partition_profile_config_t
    BEGIN(T, "struct_amdsmi_accelerator_partition_profile_config_t");
    F(T, num_profiles); F(T, num_resource_profiles); F(T, resource_profiles);
    F(T, default_profile_index); F(T, PADDING_0); F(T, profiles); F(T, reserved);
    end();
#undef T
#define T amdsmi_vram_usage_t
    BEGIN(T, "struct_amdsmi_vram_usage_t");
    F(T, vram_total); F(T, vram_used); F(T, reserved);
    end();
#undef T
#define T amdsmi_vram_info_t
    BEGIN(T, "struct_amdsmi_vram_info_t");
    F(T, vram_type); F(T, vram_vendor); F(T, PADDING_0); F(T, vram_size); F(T, vram_bit_width);
    F(T, PADDING_1); F(T, vram_max_bandwidth); F(T, reserved);
    end();
#undef T
#define T amdsmi_proc_engine_usage_t
    BEGIN(T, "struct_engine_usage_");
    F(T, gfx); F(T, enc); F(T, reserved);
    end();
#undef T
#define T amdsmi_proc_memory_usage_t
    BEGIN(T, "struct_memory_usage_");
    F(T, gtt_mem); F(T, cpu_mem); F(T, vram_mem); F(T, reserved);
    end();
#undef T
#define T amdsmi_proc_info_t
    BEGIN(T, "struct_amdsmi_proc_info_t");
    F(T, name); F(T, pid); F(T, PADDING_0); F(T, mem); F(T, engine_usage); F(T, memory_usage);
    F(T, container_name); F(T, cu_occupancy); F(T, reserved);
    end();
#undef T
#define T amdsmi_process_info_t
    BEGIN(T, "struct_amdsmi_process_info_t");
    F(T, process_id); F(T, PADDING_0); F(T, vram_usage); F(T, sdma_usage); F(T, cu_occupancy);
    F(T, PADDING_1);
    end();
#undef T
#define T amdsmi_engine_usage_t
    BEGIN(T, "struct_amdsmi_engine_usage_t");
    F(T, gfx_activity); F(T, umc_activity); F(T, mm_activity); F(T, reserved);
    end();
#undef T
#define T amdsmi_power_info_t
    BEGIN(T, "struct_amdsmi_power_info_t");
    F(T, socket_power); F(T, current_socket_power); F(T, average_socket_power); F(T, gfx_voltage);
    F(T, soc_voltage); F(T, mem_voltage); F(T, power_limit); F(T, PADDING_0); F(T, reserved);
    end();
#undef T
#define T amdsmi_version_t
    BEGIN(T, "struct_amdsmi_version_t");
    F(T, major); F(T, minor); F(T, release); F(T, PADDING_0); F(T, build);
    end();
#undef T
#define T amdsmi_driver_info_t
    BEGIN(T, "struct_amdsmi_driver_info_t");
    F(T, driver_version); F(T, driver_date); F(T, driver_name);
    end();
#undef T
#define T amdsmi_board_info_t
    BEGIN(T, "struct_amdsmi_board_info_t");
    F(T, model_number); F(T, product_serial); F(T, fru_id); F(T, product_name);
    F(T, manufacturer_name); F(T, reserved);
    end();
#undef T
#define T amdsmi_xgmi_info_t
    BEGIN(T, "struct_amdsmi_xgmi_info_t");
    F(T, xgmi_lanes); F(T, PADDING_0); F(T, xgmi_hive_id); F(T, xgmi_node_id); F(T, index);
    F(T, reserved);
    end();
#undef T
#define T amd_metrics_table_header_t
    BEGIN(T, "struct_amd_metrics_table_header_t");
    F(T, structure_size); F(T, format_revision); F(T, content_revision);
    end();
#undef T
#define T amdsmi_gpu_xcp_metrics_t
    BEGIN(T, "struct_amdsmi_gpu_xcp_metrics_t");
    F(T, gfx_busy_inst); F(T, jpeg_busy); F(T, vcn_busy); F(T, gfx_busy_acc);
    F(T, gfx_below_host_limit_acc); F(T, gfx_below_host_limit_ppt_acc);
    F(T, gfx_below_host_limit_thm_acc); F(T, gfx_low_utilization_acc);
    F(T, gfx_below_host_limit_total_acc);
    end();
#undef T
#define T amdsmi_gpu_metrics_t
    BEGIN(T, "struct_amdsmi_gpu_metrics_t");
    F(T, common_header); F(T, temperature_edge); F(T, temperature_hotspot); F(T, temperature_mem);
    F(T, temperature_vrgfx); F(T, temperature_vrsoc); F(T, temperature_vrmem);
    F(T, average_gfx_activity); F(T, average_umc_activity); F(T, average_mm_activity);
    F(T, average_socket_power); F(T, energy_accumulator); F(T, system_clock_counter);
    F(T, average_gfxclk_frequency); F(T, average_socclk_frequency); F(T, average_uclk_frequency);
    F(T, average_vclk0_frequency); F(T, average_dclk0_frequency); F(T, average_vclk1_frequency);
    F(T, average_dclk1_frequency); F(T, current_gfxclk); F(T, current_socclk); F(T, current_uclk);
    F(T, current_vclk0); F(T, current_dclk0); F(T, current_vclk1); F(T, current_dclk1);
    F(T, throttle_status); F(T, current_fan_speed); F(T, pcie_link_width); F(T, pcie_link_speed);
    F(T, PADDING_0); F(T, gfx_activity_acc); F(T, mem_activity_acc); F(T, temperature_hbm);
    F(T, firmware_timestamp); F(T, voltage_soc); F(T, voltage_gfx); F(T, voltage_mem);
    F(T, PADDING_1); F(T, indep_throttle_status); F(T, current_socket_power); F(T, vcn_activity);
    F(T, PADDING_2); F(T, gfxclk_lock_status); F(T, xgmi_link_width); F(T, xgmi_link_speed);
    F(T, PADDING_3); F(T, pcie_bandwidth_acc); F(T, pcie_bandwidth_inst);
    F(T, pcie_l0_to_recov_count_acc); F(T, pcie_replay_count_acc); F(T, pcie_replay_rover_count_acc);
    F(T, xgmi_read_data_acc); F(T, xgmi_write_data_acc); F(T, current_gfxclks); F(T, current_socclks);
    F(T, current_vclk0s); F(T, current_dclk0s); F(T, jpeg_activity); F(T, pcie_nak_sent_count_acc);
    F(T, pcie_nak_rcvd_count_acc); F(T, accumulation_counter); F(T, prochot_residency_acc);
    F(T, ppt_residency_acc); F(T, socket_thm_residency_acc); F(T, vr_thm_residency_acc);
    F(T, hbm_thm_residency_acc); F(T, num_partition); F(T, PADDING_4); F(T, xcp_stats);
    F(T, pcie_lc_perf_other_end_recovery); F(T, PADDING_5); F(T, vram_max_bandwidth);
    F(T, xgmi_link_status);
    end();
#undef T
    printf("\n}\n");
    return 0;
}
