/*
 * Utilisation, temperature, power, gpu_metrics and xGMI topology.
 *
 * Load comes from the fake processes' busy%: a partition's busy is the sum over its processes
 * (capped at 100), a GPU's is the mean over its partitions. Temperatures and power rise
 * linearly with the GPU's busy (idle ~42 C hotspot / 140 W, full ~90 C / 750 W = MI300X TBP).
 *
 * Device-wide telemetry lives on the primary partition only: on hardware the secondary XCPs
 * have no gpu_metrics of their own and amd-smi shows N/A for their temperature and power
 * (docs/facts-mi300x.md#telemetry-on-partitions). So on partitions other than 0:
 * amdsmi_get_power_info fills every field with 0xFFFF (the wrapper prints "N/A"),
 * amdsmi_get_temp_metric and amdsmi_get_gpu_metrics_info answer AMDSMI_STATUS_NOT_SUPPORTED.
 * Activity (amdsmi_get_gpu_activity, amdsmi_get_gpu_busy_percent) is answered per partition
 * everywhere.
 */
#include <string.h>
#include <time.h>

#include "emu_api.h"

#define NA16 0xFFFFu

static int busy_of(const emu_ctx *ctx)
{
    return emu_partition_busy(ctx->st, ctx->gpu, ctx->partition);
}

static amdsmi_status_t fill_activity(const emu_ctx *ctx, void *out)
{
    amdsmi_engine_usage_t *usage = out;
    int busy = busy_of(ctx);
    memset(usage, 0, sizeof *usage);
    usage->gfx_activity = (uint32_t)busy;
    usage->umc_activity = (uint32_t)(busy * 6 / 10); /* LLM decode is memory-bound: HBM follows gfx */
    usage->mm_activity = 0;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_activity(amdsmi_processor_handle handle, amdsmi_engine_usage_t *usage)
{
    return emu_get(handle, usage, fill_activity);
}

EMU_SIMPLE_GETTER(amdsmi_get_gpu_busy_percent, uint32_t, (uint32_t)busy_of(ctx))

static int hotspot_c(const emu_ctx *ctx)
{
    return 42 + ctx->gpu % 3 + emu_gpu_busy(ctx->st, ctx->gpu) * 48 / 100;
}

static int hbm_c(const emu_ctx *ctx)
{
    return 38 + ctx->gpu % 3 + emu_gpu_busy(ctx->st, ctx->gpu) * 40 / 100;
}

static uint32_t socket_power_w(const emu_ctx *ctx)
{
    return 140u + (uint32_t)emu_gpu_busy(ctx->st, ctx->gpu) * 610u / 100u;
}

AMDSMI_API amdsmi_status_t amdsmi_get_temp_metric(amdsmi_processor_handle handle, uint32_t sensor, uint32_t metric,
                                                  int64_t *value)
{
    if (value == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    int current, critical;
    if (ctx.partition != 0) {
        rc = AMDSMI_STATUS_NOT_SUPPORTED; /* secondary XCP: no device sensors (N/A in amd-smi) */
    } else if (sensor == AMDSMI_TEMPERATURE_TYPE_HOTSPOT) {
        current = hotspot_c(&ctx), critical = 110;
    } else if (sensor == AMDSMI_TEMPERATURE_TYPE_EDGE) {
        current = hotspot_c(&ctx) - 8, critical = 100;
    } else if (sensor == AMDSMI_TEMPERATURE_TYPE_VRAM ||
               (sensor >= AMDSMI_TEMPERATURE_TYPE_HBM_0 && sensor <= AMDSMI_TEMPERATURE_TYPE_HBM_3)) {
        current = hbm_c(&ctx), critical = 95;
    } else {
        rc = AMDSMI_STATUS_NOT_SUPPORTED;
    }
    if (rc == AMDSMI_STATUS_SUCCESS) {
        switch (metric) {
        case AMDSMI_TEMP_CURRENT: *value = current; break;
        case AMDSMI_TEMP_CRITICAL: *value = critical; break;
        case AMDSMI_TEMP_EMERGENCY: *value = critical + 5; break;
        default: rc = AMDSMI_STATUS_NOT_SUPPORTED; break;
        }
    }
    emu_ctx_close(&ctx);
    return rc;
}

static amdsmi_status_t fill_power_info(const emu_ctx *ctx, void *out)
{
    amdsmi_power_info_t *info = out;
    memset(info, 0, sizeof *info);
    if (ctx->partition != 0) {
        info->socket_power = info->current_socket_power = info->average_socket_power = NA16;
        info->gfx_voltage = info->soc_voltage = info->mem_voltage = NA16;
        info->power_limit = NA16;
    } else {
        uint32_t watts = socket_power_w(ctx);
        info->socket_power = watts;
        info->current_socket_power = watts;
        info->average_socket_power = watts;
        info->gfx_voltage = 700u + (uint64_t)emu_gpu_busy(ctx->st, ctx->gpu); /* mV */
        info->soc_voltage = 800;
        info->mem_voltage = 1100;
        info->power_limit = 750;
    }
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_power_info(amdsmi_processor_handle handle, amdsmi_power_info_t *info)
{
    return emu_get(handle, info, fill_power_info);
}

static amdsmi_status_t fill_gpu_metrics(const emu_ctx *ctx, void *out)
{
    amdsmi_gpu_metrics_t *m = out;
    if (ctx->partition != 0)
        return AMDSMI_STATUS_NOT_SUPPORTED;
    /* All-ones is "not available" for every field; fill the ones a partition manager reads. */
    memset(m, 0xFF, sizeof *m);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int n = emu_mode_partitions(ctx->mode), gpu_busy = emu_gpu_busy(ctx->st, ctx->gpu);
    uint32_t xccs = emu_partition_xccs(ctx->mode);
    m->common_header.structure_size = (uint16_t)sizeof *m;
    m->common_header.format_revision = 1;
    m->common_header.content_revision = 8;
    m->temperature_hotspot = (uint16_t)hotspot_c(ctx);
    m->temperature_mem = (uint16_t)hbm_c(ctx);
    m->average_gfx_activity = (uint16_t)gpu_busy;
    m->average_umc_activity = (uint16_t)(gpu_busy * 6 / 10);
    m->current_socket_power = (uint16_t)socket_power_w(ctx);
    m->system_clock_counter = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    m->pcie_link_width = 16;
    m->pcie_link_speed = 320; /* 0.1 GT/s units: PCIe 5.0 */
    m->xgmi_link_width = 16;
    m->xgmi_link_speed = 32;
    m->num_partition = (uint16_t)n;
    for (int p = 0; p < n; p++) {
        int busy = emu_partition_busy(ctx->st, ctx->gpu, p);
        for (uint32_t x = 0; x < xccs; x++) {
            m->xcp_stats[p].gfx_busy_inst[x] = (uint32_t)busy;
            m->current_gfxclks[(uint32_t)p * xccs + x] = busy ? 2100 : 500; /* MHz */
        }
    }
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_metrics_info(amdsmi_processor_handle handle, amdsmi_gpu_metrics_t *m)
{
    return emu_get(handle, m, fill_gpu_metrics);
}

/* Every pair of GPUs in the hive is one xGMI hop apart (fully connected 8-OAM baseboard);
 * partitions of one GPU share the device. Weights follow KFD's CRAT: 13 intra-socket, 15 xGMI.
 * So a link depends only on whether both handles are partitions of one GPU. */
static amdsmi_status_t same_gpu(amdsmi_processor_handle a, amdsmi_processor_handle b, int *same)
{
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, b);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    int gpu_b = ctx.gpu;
    emu_ctx_close(&ctx);
    rc = emu_ctx_open(&ctx, a);
    if (rc == AMDSMI_STATUS_SUCCESS)
        *same = ctx.gpu == gpu_b;
    emu_ctx_close(&ctx);
    return rc;
}

AMDSMI_API amdsmi_status_t amdsmi_topo_get_link_type(amdsmi_processor_handle a, amdsmi_processor_handle b,
                                                     uint64_t *hops, uint32_t *type)
{
    if (hops == NULL || type == NULL)
        return AMDSMI_STATUS_INVAL;
    int same;
    amdsmi_status_t rc = same_gpu(a, b, &same);
    if (rc == AMDSMI_STATUS_SUCCESS) {
        *hops = same ? 0 : 1;
        *type = same ? AMDSMI_LINK_TYPE_INTERNAL : AMDSMI_LINK_TYPE_XGMI;
    }
    return rc;
}

AMDSMI_API amdsmi_status_t amdsmi_topo_get_link_weight(amdsmi_processor_handle a, amdsmi_processor_handle b,
                                                       uint64_t *weight)
{
    if (weight == NULL)
        return AMDSMI_STATUS_INVAL;
    int same;
    amdsmi_status_t rc = same_gpu(a, b, &same);
    if (rc == AMDSMI_STATUS_SUCCESS)
        *weight = same ? 13 : 15;
    return rc;
}

AMDSMI_API amdsmi_status_t amdsmi_is_P2P_accessible(amdsmi_processor_handle a, amdsmi_processor_handle b,
                                                    bool *accessible)
{
    if (accessible == NULL)
        return AMDSMI_STATUS_INVAL;
    int same;
    amdsmi_status_t rc = same_gpu(a, b, &same); /* resolves both: a stale handle is NOT_FOUND */
    if (rc == AMDSMI_STATUS_SUCCESS)
        *accessible = true;
    return rc;
}

/* Two CPU sockets; the first half of the OAMs hang off socket 0. */
EMU_SIMPLE_GETTER(amdsmi_topo_get_numa_node_number, uint32_t, ctx->gpu < (ctx->st->num_gpus + 1) / 2 ? 0 : 1)

static amdsmi_status_t fill_xgmi_info(const emu_ctx *ctx, void *out)
{
    amdsmi_xgmi_info_t *info = out;
    memset(info, 0, sizeof *info);
    info->xgmi_lanes = 16;
    info->xgmi_hive_id = 0x4D49333030580000ull; /* one hive per node */
    info->xgmi_node_id = (uint64_t)ctx->gpu;
    info->index = (uint32_t)ctx->gpu;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_xgmi_info(amdsmi_processor_handle handle, amdsmi_xgmi_info_t *info)
{
    return emu_get(handle, info, fill_xgmi_info);
}
