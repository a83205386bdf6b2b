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

/* One entry: the type's size, then the name, offset and size of each field in `fields`, a list
 * `F(name); F(name); ...` that names the type through the local typedef T, so the type is written
 * once per entry. PARTIAL: check_layout.py compares the listed fields but not the field list. */
#define DUMP(type, ctypes_name, partial, fields)  \
    do {                                          \
        typedef type T;                           \
        begin(ctypes_name, sizeof(T), partial);   \
        fields;                                   \
        end();                                    \
    } while (0)
#define STRUCT(type, ctypes_name, fields) DUMP(type, ctypes_name, 0, fields)
#define PARTIAL(type, ctypes_name, fields) DUMP(type, ctypes_name, 1, fields)
#define F(f) field(#f, offsetof(T, f), sizeof(((T *)0)->f))

int main(void)
{
    /* Unions of bit-fields: only size and the integer view are compared. */
    PARTIAL(amdsmi_bdf_t, "union_amdsmi_bdf_t", F(as_uint));
    PARTIAL(amdsmi_nps_caps_t, "union_amdsmi_nps_caps_t", F(nps_cap_mask));

    STRUCT(amdsmi_enumeration_info_t, "struct_amdsmi_enumeration_info_t",
           F(drm_render); F(drm_card); F(hsa_id); F(hip_id); F(hip_uuid));
    STRUCT(amdsmi_asic_info_t, "struct_amdsmi_asic_info_t",
           F(market_name); F(vendor_id); F(vendor_name); F(subvendor_id); F(device_id);
           F(rev_id); F(asic_serial); F(oam_id); F(num_of_compute_units); F(PADDING_0);
           F(target_graphics_version); F(subsystem_id); F(reserved));
    STRUCT(amdsmi_kfd_info_t, "struct_amdsmi_kfd_info_t",
           F(kfd_id); F(node_id); F(current_partition_id); F(reserved));
    STRUCT(amdsmi_numa_range_t, "struct_numa_range_",
           F(memory_type); F(PADDING_0); F(start); F(end));
    STRUCT(amdsmi_memory_partition_config_t, "struct_amdsmi_memory_partition_config_t",
           F(partition_caps); F(mp_mode); F(num_numa_ranges); F(PADDING_0); F(numa_range);
           F(reserved));
    STRUCT(amdsmi_accelerator_partition_profile_t, "struct_amdsmi_accelerator_partition_profile_t",
           F(profile_type); F(num_partitions); F(memory_caps); F(profile_index);
           F(num_resources); F(resources); F(PADDING_0); F(reserved));
    STRUCT(amdsmi_accelerator_partition_resource_profile_t,
           "struct_amdsmi_accelerator_partition_resource_profile_t",
           F(profile_index); F(resource_type); F(partition_resource);
           F(num_partitions_share_resource); F(reserved));
    STRUCT(amdsmi_accelerator_partition_profile_config_t,
           "struct_amdsmi_accelerator_partition_profile_config_t",
           F(num_profiles); F(num_resource_profiles); F(resource_profiles);
           F(default_profile_index); F(PADDING_0); F(profiles); F(reserved));
    STRUCT(amdsmi_vram_usage_t, "struct_amdsmi_vram_usage_t",
           F(vram_total); F(vram_used); F(reserved));
    STRUCT(amdsmi_vram_info_t, "struct_amdsmi_vram_info_t",
           F(vram_type); F(vram_vendor); F(PADDING_0); F(vram_size); F(vram_bit_width);
           F(PADDING_1); F(vram_max_bandwidth); F(reserved));
    STRUCT(amdsmi_proc_engine_usage_t, "struct_engine_usage_",
           F(gfx); F(enc); F(reserved));
    STRUCT(amdsmi_proc_memory_usage_t, "struct_memory_usage_",
           F(gtt_mem); F(cpu_mem); F(vram_mem); F(reserved));
    STRUCT(amdsmi_proc_info_t, "struct_amdsmi_proc_info_t",
           F(name); F(pid); F(PADDING_0); F(mem); F(engine_usage); F(memory_usage);
           F(container_name); F(cu_occupancy); F(reserved));
    STRUCT(amdsmi_process_info_t, "struct_amdsmi_process_info_t",
           F(process_id); F(PADDING_0); F(vram_usage); F(sdma_usage); F(cu_occupancy);
           F(PADDING_1));
    STRUCT(amdsmi_engine_usage_t, "struct_amdsmi_engine_usage_t",
           F(gfx_activity); F(umc_activity); F(mm_activity); F(reserved));
    STRUCT(amdsmi_power_info_t, "struct_amdsmi_power_info_t",
           F(socket_power); F(current_socket_power); F(average_socket_power); F(gfx_voltage);
           F(soc_voltage); F(mem_voltage); F(power_limit); F(PADDING_0); F(reserved));
    STRUCT(amdsmi_version_t, "struct_amdsmi_version_t",
           F(major); F(minor); F(release); F(PADDING_0); F(build));
    STRUCT(amdsmi_driver_info_t, "struct_amdsmi_driver_info_t",
           F(driver_version); F(driver_date); F(driver_name));
    STRUCT(amdsmi_board_info_t, "struct_amdsmi_board_info_t",
           F(model_number); F(product_serial); F(fru_id); F(product_name);
           F(manufacturer_name); F(reserved));
    STRUCT(amdsmi_xgmi_info_t, "struct_amdsmi_xgmi_info_t",
           F(xgmi_lanes); F(PADDING_0); F(xgmi_hive_id); F(xgmi_node_id); F(index);
           F(reserved));
    STRUCT(amd_metrics_table_header_t, "struct_amd_metrics_table_header_t",
           F(structure_size); F(format_revision); F(content_revision));
    STRUCT(amdsmi_gpu_xcp_metrics_t, "struct_amdsmi_gpu_xcp_metrics_t",
           F(gfx_busy_inst); F(jpeg_busy); F(vcn_busy); F(gfx_busy_acc);
           F(gfx_below_host_limit_acc); F(gfx_below_host_limit_ppt_acc);
           F(gfx_below_host_limit_thm_acc); F(gfx_low_utilization_acc);
           F(gfx_below_host_limit_total_acc));
    STRUCT(amdsmi_gpu_metrics_t, "struct_amdsmi_gpu_metrics_t",
           F(common_header); F(temperature_edge); F(temperature_hotspot); F(temperature_mem);
           F(temperature_vrgfx); F(temperature_vrsoc); F(temperature_vrmem);
           F(average_gfx_activity); F(average_umc_activity); F(average_mm_activity);
           F(average_socket_power); F(energy_accumulator); F(system_clock_counter);
           F(average_gfxclk_frequency); F(average_socclk_frequency); F(average_uclk_frequency);
           F(average_vclk0_frequency); F(average_dclk0_frequency); F(average_vclk1_frequency);
           F(average_dclk1_frequency); F(current_gfxclk); F(current_socclk); F(current_uclk);
           F(current_vclk0); F(current_dclk0); F(current_vclk1); F(current_dclk1);
           F(throttle_status); F(current_fan_speed); F(pcie_link_width); F(pcie_link_speed);
           F(PADDING_0); F(gfx_activity_acc); F(mem_activity_acc); F(temperature_hbm);
           F(firmware_timestamp); F(voltage_soc); F(voltage_gfx); F(voltage_mem);
           F(PADDING_1); F(indep_throttle_status); F(current_socket_power); F(vcn_activity);
           F(PADDING_2); F(gfxclk_lock_status); F(xgmi_link_width); F(xgmi_link_speed);
           F(PADDING_3); F(pcie_bandwidth_acc); F(pcie_bandwidth_inst);
           F(pcie_l0_to_recov_count_acc); F(pcie_replay_count_acc); F(pcie_replay_rover_count_acc);
           F(xgmi_read_data_acc); F(xgmi_write_data_acc); F(current_gfxclks); F(current_socclks);
           F(current_vclk0s); F(current_dclk0s); F(jpeg_activity); F(pcie_nak_sent_count_acc);
           F(pcie_nak_rcvd_count_acc); F(accumulation_counter); F(prochot_residency_acc);
           F(ppt_residency_acc); F(socket_thm_residency_acc); F(vr_thm_residency_acc);
           F(hbm_thm_residency_acc); F(num_partition); F(PADDING_4); F(xcp_stats);
           F(pcie_lc_perf_other_end_recovery); F(PADDING_5); F(vram_max_bandwidth);
           F(xgmi_link_status));
    printf("\n}\n");
    return 0;
}
