/*
 * The part of the libamd_smi ABI (AMD-SMI 26.0.x / ROCm 7.0.x) that the emulator fills in.
 *
 * The source of truth is the ctypes description in the amdsmi 7.0.2 wheel (amdsmi_wrapper.py),
 * not AMD's C header: the Python package is the only consumer. Every struct is declared packed
 * with the wrapper's explicit PADDING_n fields, so offsets match by construction; the build runs
 * tools/check_layout.py, which compares sizeof/offsetof of each struct below with the ctypes
 * class and fails the build on any difference. Bit-field unions (BDF, NPS caps) are declared as
 * plain integers; the bit positions are in the helpers and covered by the tests.
 */
#ifndef MIPART_AMDSMI_ABI_H
#define MIPART_AMDSMI_ABI_H

#include <stdbool.h>
#include <stdint.h>

#define AMDSMI_API __attribute__((visibility("default")))
#define AMDSMI_PACKED __attribute__((packed))

typedef uint32_t amdsmi_status_t;
typedef void *amdsmi_processor_handle;
typedef void *amdsmi_socket_handle;

enum {
    AMDSMI_STATUS_SUCCESS = 0,
    AMDSMI_STATUS_INVAL = 1,
    AMDSMI_STATUS_NOT_SUPPORTED = 2,
    AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3,
    AMDSMI_STATUS_FAIL_LOAD_MODULE = 4,
    AMDSMI_STATUS_FAIL_LOAD_SYMBOL = 5,
    AMDSMI_STATUS_DRM_ERROR = 6,
    AMDSMI_STATUS_API_FAILED = 7,
    AMDSMI_STATUS_TIMEOUT = 8,
    AMDSMI_STATUS_RETRY = 9,
    AMDSMI_STATUS_NO_PERM = 10,
    AMDSMI_STATUS_INTERRUPT = 11,
    AMDSMI_STATUS_IO = 12,
    AMDSMI_STATUS_ADDRESS_FAULT = 13,
    AMDSMI_STATUS_FILE_ERROR = 14,
    AMDSMI_STATUS_OUT_OF_RESOURCES = 15,
    AMDSMI_STATUS_INTERNAL_EXCEPTION = 16,
    AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS = 17,
    AMDSMI_STATUS_INIT_ERROR = 18,
    AMDSMI_STATUS_REFCOUNT_OVERFLOW = 19,
    AMDSMI_STATUS_DIRECTORY_NOT_FOUND = 20,
    AMDSMI_STATUS_BUSY = 30,
    AMDSMI_STATUS_NOT_FOUND = 31,
    AMDSMI_STATUS_NOT_INIT = 32,
    AMDSMI_STATUS_NO_SLOT = 33,
    AMDSMI_STATUS_DRIVER_NOT_LOADED = 34,
    AMDSMI_STATUS_MORE_DATA = 39,
    AMDSMI_STATUS_NO_DATA = 40,
    AMDSMI_STATUS_INSUFFICIENT_SIZE = 41,
    AMDSMI_STATUS_UNEXPECTED_SIZE = 42,
    AMDSMI_STATUS_UNEXPECTED_DATA = 43,
    AMDSMI_STATUS_NON_AMD_CPU = 44,
    AMDSMI_STATUS_NO_ENERGY_DRV = 45,
    AMDSMI_STATUS_NO_MSR_DRV = 46,
    AMDSMI_STATUS_NO_HSMP_DRV = 47,
    AMDSMI_STATUS_NO_HSMP_SUP = 48,
    AMDSMI_STATUS_NO_HSMP_MSG_SUP = 49,
    AMDSMI_STATUS_HSMP_TIMEOUT = 50,
    AMDSMI_STATUS_NO_DRV = 51,
    AMDSMI_STATUS_FILE_NOT_FOUND = 52,
    AMDSMI_STATUS_ARG_PTR_NULL = 53,
    AMDSMI_STATUS_AMDGPU_RESTART_ERR = 54,
    AMDSMI_STATUS_SETTING_UNAVAILABLE = 55,
    AMDSMI_STATUS_CORRUPTED_EEPROM = 56,
    AMDSMI_STATUS_MAP_ERROR = 0xFFFFFFFEu,
    AMDSMI_STATUS_UNKNOWN_ERROR = 0xFFFFFFFFu,
};

enum { AMDSMI_INIT_AMD_GPUS = 2 };
enum { AMDSMI_PROCESSOR_TYPE_AMD_GPU = 1 };

/* amdsmi_compute_partition_type_t and amdsmi_accelerator_partition_type_t share these values. */
enum {
    AMDSMI_COMPUTE_PARTITION_INVALID = 0,
    AMDSMI_COMPUTE_PARTITION_SPX = 1,
    AMDSMI_COMPUTE_PARTITION_DPX = 2,
    AMDSMI_COMPUTE_PARTITION_TPX = 3,
    AMDSMI_COMPUTE_PARTITION_QPX = 4,
    AMDSMI_COMPUTE_PARTITION_CPX = 5,
};

enum {
    AMDSMI_MEMORY_PARTITION_UNKNOWN = 0,
    AMDSMI_MEMORY_PARTITION_NPS1 = 1,
    AMDSMI_MEMORY_PARTITION_NPS2 = 2,
    AMDSMI_MEMORY_PARTITION_NPS4 = 4,
    AMDSMI_MEMORY_PARTITION_NPS8 = 8,
};

/* Bits of amdsmi_nps_caps_t.nps_cap_mask (struct nps_flags_: nps1_cap is bit 0, ...). */
enum {
    AMDSMI_NPS1_CAP = 1u << 0,
    AMDSMI_NPS2_CAP = 1u << 1,
    AMDSMI_NPS4_CAP = 1u << 2,
    AMDSMI_NPS8_CAP = 1u << 3,
};

enum {
    AMDSMI_ACCELERATOR_XCC = 0,
    AMDSMI_ACCELERATOR_ENCODER = 1,
    AMDSMI_ACCELERATOR_DECODER = 2,
    AMDSMI_ACCELERATOR_DMA = 3,
    AMDSMI_ACCELERATOR_JPEG = 4,
};

enum { AMDSMI_MEM_TYPE_VRAM = 0, AMDSMI_MEM_TYPE_VIS_VRAM = 1, AMDSMI_MEM_TYPE_GTT = 2 };

enum {
    AMDSMI_TEMPERATURE_TYPE_EDGE = 0,
    AMDSMI_TEMPERATURE_TYPE_HOTSPOT = 1, /* also JUNCTION */
    AMDSMI_TEMPERATURE_TYPE_VRAM = 2,
    AMDSMI_TEMPERATURE_TYPE_HBM_0 = 3,
    AMDSMI_TEMPERATURE_TYPE_HBM_3 = 6,
};

enum {
    AMDSMI_TEMP_CURRENT = 0,
    AMDSMI_TEMP_MAX = 1,
    AMDSMI_TEMP_CRITICAL = 5,
    AMDSMI_TEMP_EMERGENCY = 7,
};

enum { AMDSMI_VRAM_TYPE_HBM3 = 4 };
enum { AMDSMI_LINK_TYPE_INTERNAL = 0, AMDSMI_LINK_TYPE_PCIE = 1, AMDSMI_LINK_TYPE_XGMI = 2 };
enum { AMDSMI_VIRTUALIZATION_MODE_BAREMETAL = 1 };

#define AMDSMI_GPU_UUID_SIZE 38
#define AMDSMI_MAX_STRING_LENGTH 256

/* union amdsmi_bdf_t: function bits 0-2, device 3-7, bus 8-15, domain 16-63 (LSB-first
 * bit-fields, as gcc and ctypes lay them out on x86-64). */
typedef union AMDSMI_PACKED {
    uint64_t bdf;
    uint64_t struct_amdsmi_bdf_t;
    uint64_t as_uint;
} amdsmi_bdf_t;

typedef union AMDSMI_PACKED {
    uint32_t nps_flags; /* a struct of 1-bit fields in the wrapper; see AMDSMI_NPS*_CAP */
    uint32_t nps_cap_mask;
} amdsmi_nps_caps_t;

typedef struct AMDSMI_PACKED {
    uint32_t drm_render;
    uint32_t drm_card;
    uint32_t hsa_id;
    uint32_t hip_id;
    char hip_uuid[256];
} amdsmi_enumeration_info_t;

typedef struct AMDSMI_PACKED {
    char market_name[256];
    uint32_t vendor_id;
    char vendor_name[256];
    uint32_t subvendor_id;
    uint64_t device_id;
    uint32_t rev_id;
    char asic_serial[256];
    uint32_t oam_id;
    uint32_t num_of_compute_units;
    uint8_t PADDING_0[4];
    uint64_t target_graphics_version;
    uint32_t subsystem_id;
    uint32_t reserved[21];
} amdsmi_asic_info_t;

typedef struct AMDSMI_PACKED {
    uint64_t kfd_id;
    uint32_t node_id;
    uint32_t current_partition_id;
    uint32_t reserved[12];
} amdsmi_kfd_info_t;

typedef struct AMDSMI_PACKED {
    uint32_t memory_type;
    uint8_t PADDING_0[4];
    uint64_t start;
    uint64_t end;
} amdsmi_numa_range_t;

typedef struct AMDSMI_PACKED {
    amdsmi_nps_caps_t partition_caps;
    uint32_t mp_mode;
    uint32_t num_numa_ranges;
    uint8_t PADDING_0[4];
    amdsmi_numa_range_t numa_range[32];
    uint64_t reserved[11];
} amdsmi_memory_partition_config_t;

typedef struct AMDSMI_PACKED {
    uint32_t profile_type;
    uint32_t num_partitions;
    amdsmi_nps_caps_t memory_caps;
    uint32_t profile_index;
    uint32_t num_resources;
    uint32_t resources[8][32]; /* ctypes: c_uint32 * 32 * 8 */
    uint8_t PADDING_0[4];
    uint64_t reserved[13];
} amdsmi_accelerator_partition_profile_t;

typedef struct AMDSMI_PACKED {
    uint32_t profile_index;
    uint32_t resource_type;
    uint32_t partition_resource;
    uint32_t num_partitions_share_resource;
    uint64_t reserved[6];
} amdsmi_accelerator_partition_resource_profile_t;

typedef struct AMDSMI_PACKED {
    uint32_t num_profiles;
    uint32_t num_resource_profiles;
    amdsmi_accelerator_partition_resource_profile_t resource_profiles[32];
    uint32_t default_profile_index;
    uint8_t PADDING_0[4];
    amdsmi_accelerator_partition_profile_t profiles[32];
    uint64_t reserved[30];
} amdsmi_accelerator_partition_profile_config_t;

typedef struct AMDSMI_PACKED {
    uint32_t vram_total; /* MB */
    uint32_t vram_used;  /* MB */
    uint32_t reserved[2];
} amdsmi_vram_usage_t;

typedef struct AMDSMI_PACKED {
    uint32_t vram_type;
    char vram_vendor[256];
    uint8_t PADDING_0[4];
    uint64_t vram_size; /* MB */
    uint32_t vram_bit_width;
    uint8_t PADDING_1[4];
    uint64_t vram_max_bandwidth; /* GB/s */
    uint64_t reserved[37];
} amdsmi_vram_info_t;

typedef struct AMDSMI_PACKED {
    uint64_t gfx; /* ns of engine time */
    uint64_t enc;
    uint32_t reserved[12];
} amdsmi_proc_engine_usage_t;

typedef struct AMDSMI_PACKED {
    uint64_t gtt_mem;
    uint64_t cpu_mem;
    uint64_t vram_mem;
    uint32_t reserved[10];
} amdsmi_proc_memory_usage_t;

typedef struct AMDSMI_PACKED {
    char name[256];
    uint32_t pid;
    uint8_t PADDING_0[4];
    uint64_t mem;
    amdsmi_proc_engine_usage_t engine_usage;
    amdsmi_proc_memory_usage_t memory_usage;
    char container_name[256];
    uint32_t cu_occupancy;
    uint32_t reserved[11];
} amdsmi_proc_info_t;

typedef struct AMDSMI_PACKED {
    uint32_t process_id;
    uint8_t PADDING_0[4];
    uint64_t vram_usage;
    uint64_t sdma_usage;
    uint32_t cu_occupancy;
    uint8_t PADDING_1[4];
} amdsmi_process_info_t;

typedef struct AMDSMI_PACKED {
    uint32_t gfx_activity;
    uint32_t umc_activity;
    uint32_t mm_activity;
    uint32_t reserved[13];
} amdsmi_engine_usage_t;

typedef struct AMDSMI_PACKED {
    uint64_t socket_power;
    uint32_t current_socket_power;
    uint32_t average_socket_power;
    uint64_t gfx_voltage;
    uint64_t soc_voltage;
    uint64_t mem_voltage;
    uint32_t power_limit;
    uint8_t PADDING_0[4];
    uint64_t reserved[18];
} amdsmi_power_info_t;

typedef struct AMDSMI_PACKED {
    uint32_t major;
    uint32_t minor;
    uint32_t release;
    uint8_t PADDING_0[4];
    const char *build;
} amdsmi_version_t;

typedef struct AMDSMI_PACKED {
    char driver_version[256];
    char driver_date[256];
    char driver_name[256];
} amdsmi_driver_info_t;

typedef struct AMDSMI_PACKED {
    char model_number[256];
    char product_serial[256];
    char fru_id[256];
    char product_name[256];
    char manufacturer_name[256];
    uint64_t reserved[64];
} amdsmi_board_info_t;

typedef struct AMDSMI_PACKED {
    uint8_t xgmi_lanes;
    uint8_t PADDING_0[7];
    uint64_t xgmi_hive_id;
    uint64_t xgmi_node_id;
    uint32_t index;
    uint32_t reserved[9];
} amdsmi_xgmi_info_t;

typedef struct AMDSMI_PACKED {
    uint16_t structure_size;
    uint8_t format_revision;
    uint8_t content_revision;
} amd_metrics_table_header_t;

typedef struct AMDSMI_PACKED {
    uint32_t gfx_busy_inst[8]; /* one per XCC of the partition, % */
    uint16_t jpeg_busy[40];
    uint16_t vcn_busy[4];
    uint64_t gfx_busy_acc[8];
    uint64_t gfx_below_host_limit_acc[8];
    uint64_t gfx_below_host_limit_ppt_acc[8];
    uint64_t gfx_below_host_limit_thm_acc[8];
    uint64_t gfx_low_utilization_acc[8];
    uint64_t gfx_below_host_limit_total_acc[8];
} amdsmi_gpu_xcp_metrics_t;

typedef struct AMDSMI_PACKED {
    amd_metrics_table_header_t common_header;
    uint16_t temperature_edge;
    uint16_t temperature_hotspot;
    uint16_t temperature_mem;
    uint16_t temperature_vrgfx;
    uint16_t temperature_vrsoc;
    uint16_t temperature_vrmem;
    uint16_t average_gfx_activity;
    uint16_t average_umc_activity;
    uint16_t average_mm_activity;
    uint16_t average_socket_power;
    uint64_t energy_accumulator;
    uint64_t system_clock_counter;
    uint16_t average_gfxclk_frequency;
    uint16_t average_socclk_frequency;
    uint16_t average_uclk_frequency;
    uint16_t average_vclk0_frequency;
    uint16_t average_dclk0_frequency;
    uint16_t average_vclk1_frequency;
    uint16_t average_dclk1_frequency;
    uint16_t current_gfxclk;
    uint16_t current_socclk;
    uint16_t current_uclk;
    uint16_t current_vclk0;
    uint16_t current_dclk0;
    uint16_t current_vclk1;
    uint16_t current_dclk1;
    uint32_t throttle_status;
    uint16_t current_fan_speed;
    uint16_t pcie_link_width;
    uint16_t pcie_link_speed;
    uint8_t PADDING_0[2];
    uint32_t gfx_activity_acc;
    uint32_t mem_activity_acc;
    uint16_t temperature_hbm[4];
    uint64_t firmware_timestamp;
    uint16_t voltage_soc;
    uint16_t voltage_gfx;
    uint16_t voltage_mem;
    uint8_t PADDING_1[2];
    uint64_t indep_throttle_status;
    uint16_t current_socket_power;
    uint16_t vcn_activity[4];
    uint8_t PADDING_2[2];
    uint32_t gfxclk_lock_status;
    uint16_t xgmi_link_width;
    uint16_t xgmi_link_speed;
    uint8_t PADDING_3[4];
    uint64_t pcie_bandwidth_acc;
    uint64_t pcie_bandwidth_inst;
    uint64_t pcie_l0_to_recov_count_acc;
    uint64_t pcie_replay_count_acc;
    uint64_t pcie_replay_rover_count_acc;
    uint64_t xgmi_read_data_acc[8];
    uint64_t xgmi_write_data_acc[8];
    uint16_t current_gfxclks[8];
    uint16_t current_socclks[4];
    uint16_t current_vclk0s[4];
    uint16_t current_dclk0s[4];
    uint16_t jpeg_activity[32];
    uint32_t pcie_nak_sent_count_acc;
    uint32_t pcie_nak_rcvd_count_acc;
    uint64_t accumulation_counter;
    uint64_t prochot_residency_acc;
    uint64_t ppt_residency_acc;
    uint64_t socket_thm_residency_acc;
    uint64_t vr_thm_residency_acc;
    uint64_t hbm_thm_residency_acc;
    uint16_t num_partition;
    uint8_t PADDING_4[6];
    amdsmi_gpu_xcp_metrics_t xcp_stats[8];
    uint32_t pcie_lc_perf_other_end_recovery;
    uint8_t PADDING_5[4];
    uint64_t vram_max_bandwidth;
    uint16_t xgmi_link_status[8];
} amdsmi_gpu_metrics_t;

#endif
