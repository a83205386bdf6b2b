/*
 * Init, enumeration and identity: sockets (one per physical GPU), processors (one per XCP), and
 * the IDs a device plugin maps partitions with (BDF, UUID, render node, KFD node, HIP ordinal).
 */
#include <stdio.h>
#include <string.h>

#include "emu_api.h"

AMDSMI_API amdsmi_status_t amdsmi_init(uint64_t flags)
{
    if (!(flags & AMDSMI_INIT_AMD_GPUS))
        return AMDSMI_STATUS_NOT_SUPPORTED; /* the emulator has GPUs only: no ESMI CPU path */
    emu_init_ref(+1);
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx); /* creates the state file on first use */
    emu_ctx_close(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS) {
        emu_init_ref(-1);
        return AMDSMI_STATUS_INIT_ERROR;
    }
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_shut_down(void)
{
    emu_init_ref(-1);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_socket_handles(uint32_t *count, amdsmi_socket_handle *handles)
{
    if (count == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    uint32_t total = (uint32_t)ctx.st->num_gpus;
    if (handles == NULL) {
        *count = total;
    } else {
        uint32_t n = *count < total ? *count : total;
        for (uint32_t g = 0; g < n; g++)
            handles[g] = emu_make_socket_handle(ctx.st, (int)g);
        *count = n;
    }
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_socket_info(amdsmi_socket_handle socket, size_t len, char *name)
{
    if (name == NULL || len == 0)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open_socket(&ctx, socket);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    /* The socket is the PCI device; its partitions differ only in the function number. */
    snprintf(name, len, "0000:%02x:00.0", emu_gpu_bus(ctx.gpu));
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle socket, uint32_t *count,
                                                        amdsmi_processor_handle *handles)
{
    if (count == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    /* A NULL socket means every processor of the node. */
    amdsmi_status_t rc = socket ? emu_ctx_open_socket(&ctx, socket) : emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    int first = socket ? ctx.gpu : 0, last = socket ? ctx.gpu : ctx.st->num_gpus - 1;
    uint32_t total = 0, filled = 0;
    for (int g = first; g <= last; g++) {
        for (int p = 0; p < emu_gpu_partitions(ctx.st, g); p++, total++) {
            if (handles != NULL && filled < *count)
                handles[filled++] = emu_make_processor_handle(ctx.st, g, p);
        }
    }
    *count = handles == NULL ? total : filled;
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

EMU_SIMPLE_GETTER(amdsmi_get_processor_type, uint32_t, AMDSMI_PROCESSOR_TYPE_AMD_GPU)

static uint64_t make_bdf(int gpu, int partition)
{
    /* domain 0, device 0; the partition is the function number (amd-smi list shows .0 ... .7). */
    return ((uint64_t)emu_gpu_bus(gpu) << 8) | (uint64_t)(partition & 7);
}

AMDSMI_API amdsmi_status_t amdsmi_get_processor_handle_from_bdf(amdsmi_bdf_t bdf, amdsmi_processor_handle *handle)
{
    if (handle == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    rc = AMDSMI_STATUS_NOT_FOUND;
    for (int g = 0; g < ctx.st->num_gpus && rc != AMDSMI_STATUS_SUCCESS; g++) {
        for (int p = 0; p < emu_gpu_partitions(ctx.st, g); p++) {
            if (make_bdf(g, p) == bdf.as_uint) {
                *handle = emu_make_processor_handle(ctx.st, g, p);
                rc = AMDSMI_STATUS_SUCCESS;
                break;
            }
        }
    }
    emu_ctx_close(&ctx);
    return rc;
}

static amdsmi_status_t fill_bdf(const emu_ctx *ctx, void *out)
{
    amdsmi_bdf_t *bdf = out;
    bdf->as_uint = make_bdf(ctx->gpu, ctx->partition);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_device_bdf(amdsmi_processor_handle handle, amdsmi_bdf_t *bdf)
{
    return emu_get(handle, bdf, fill_bdf);
}

/* rocm-smi BDFID: domain<<32 | bus<<8 | device<<3 | function, partition id in bits 28-31. */
EMU_SIMPLE_GETTER(amdsmi_get_gpu_bdf_id, uint64_t,
                  ((uint64_t)emu_gpu_bus(ctx->gpu) << 8) | (uint64_t)ctx->partition |
                      ((uint64_t)ctx->partition << 28))

static uint64_t asic_serial(int gpu)
{
    return 0x5E1A3C7D00000000ull + (uint64_t)(gpu + 1) * 0x1111u;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_device_uuid(amdsmi_processor_handle handle, uint32_t *len, char *uuid)
{
    if (len == NULL || uuid == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    /* From ROCm 7.0 every XCP has its own UUID; the partition is in the first byte here. */
    char text[64];
    int n = snprintf(text, sizeof text, "%02xff74a1-0000-1000-80%02x-%012llx", 0x40 + ctx.partition,
                     (unsigned)ctx.gpu, (unsigned long long)(asic_serial(ctx.gpu) & 0xffffffffffffull));
    if ((uint32_t)n + 1 > *len) {
        rc = AMDSMI_STATUS_INSUFFICIENT_SIZE;
    } else {
        memcpy(uuid, text, (size_t)n + 1);
        *len = (uint32_t)n;
    }
    emu_ctx_close(&ctx);
    return rc;
}

static amdsmi_status_t fill_enumeration_info(const emu_ctx *ctx, void *out)
{
    amdsmi_enumeration_info_t *info = out;
    memset(info, 0, sizeof *info);
    int flat = emu_flat_index(ctx->st, ctx->gpu, ctx->partition);
    /* amdgpu allocates 8 DRM nodes per GPU at probe (primary + 7 amdgpu_xcp platform devices),
     * so GPU n's partition p is renderD(128+8n+p) in every mode. */
    info->drm_render = 128u + 8u * (uint32_t)ctx->gpu + (uint32_t)ctx->partition;
    info->drm_card = 8u * (uint32_t)ctx->gpu + (uint32_t)ctx->partition;
    info->hsa_id = 2u + (uint32_t)flat; /* HSA agents: 2 CPU sockets first, then the XCPs */
    info->hip_id = (uint32_t)flat;      /* the HIP_VISIBLE_DEVICES ordinal */
    snprintf(info->hip_uuid, sizeof info->hip_uuid, "GPU-%02x%02x%012llx", 0x40 + ctx->partition,
             (unsigned)ctx->gpu, (unsigned long long)(asic_serial(ctx->gpu) & 0xffffffffffffull));
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_enumeration_info(amdsmi_processor_handle handle,
                                                           amdsmi_enumeration_info_t *info)
{
    return emu_get(handle, info, fill_enumeration_info);
}

static amdsmi_status_t fill_kfd_info(const emu_ctx *ctx, void *out)
{
    amdsmi_kfd_info_t *info = out;
    memset(info, 0, sizeof *info);
    /* KFD gpu_id is a hash on hardware; here a stable value unique per (GPU, partition). */
    info->kfd_id = 0xC000u | ((uint64_t)emu_gpu_bus(ctx->gpu) << 3) | (uint64_t)ctx->partition;
    /* KFD topology nodes: CPU nodes 0-1, then one node per XCP in enumeration order, so node
     * ids of later GPUs move when an earlier GPU changes mode (as on hardware). */
    info->node_id = 2u + (uint32_t)emu_flat_index(ctx->st, ctx->gpu, ctx->partition);
    info->current_partition_id = (uint32_t)ctx->partition;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_kfd_info(amdsmi_processor_handle handle, amdsmi_kfd_info_t *info)
{
    return emu_get(handle, info, fill_kfd_info);
}

static amdsmi_status_t fill_asic_info(const emu_ctx *ctx, void *out)
{
    amdsmi_asic_info_t *info = out;
    memset(info, 0, sizeof *info);
    emu_copy_string(info->market_name, sizeof info->market_name, "AMD Instinct MI300X");
    info->vendor_id = 0x1002;
    emu_copy_string(info->vendor_name, sizeof info->vendor_name, "Advanced Micro Devices Inc. [AMD/ATI]");
    info->subvendor_id = 0x1002;
    info->device_id = 0x74a1;
    info->rev_id = 0x00;
    snprintf(info->asic_serial, sizeof info->asic_serial, "%016llX", (unsigned long long)asic_serial(ctx->gpu));
    info->oam_id = (uint32_t)ctx->gpu;
    /* CUs of this partition (KFD node simd_count/simd_per_cu): 304/152/76/38 in SPX/DPX/QPX/CPX. */
    info->num_of_compute_units = emu_partition_cus(ctx->mode);
    info->target_graphics_version = 0x942; /* the wrapper prints "gfx" + hex: gfx942 */
    info->subsystem_id = 0x74a1;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle handle, amdsmi_asic_info_t *info)
{
    return emu_get(handle, info, fill_asic_info);
}

EMU_SIMPLE_GETTER(amdsmi_get_gpu_id, uint16_t, 0x74a1)
EMU_SIMPLE_GETTER(amdsmi_get_gpu_revision, uint16_t, 0)

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_vendor_name(amdsmi_processor_handle handle, char *name, size_t len)
{
    if (name == NULL || len == 0)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc == AMDSMI_STATUS_SUCCESS)
        emu_copy_string(name, len, "Advanced Micro Devices, Inc. [AMD/ATI]");
    emu_ctx_close(&ctx);
    return rc;
}

EMU_SIMPLE_GETTER(amdsmi_get_gpu_subsystem_id, uint16_t, 0x74a1)
EMU_SIMPLE_GETTER(amdsmi_get_gpu_virtualization_mode, uint32_t, AMDSMI_VIRTUALIZATION_MODE_BAREMETAL)
EMU_SIMPLE_GETTER(amdsmi_get_gpu_xcd_counter, uint16_t, (uint16_t)emu_partition_xccs(ctx->mode))

static amdsmi_status_t fill_driver_info(const emu_ctx *ctx, void *out)
{
    (void)ctx; /* one driver for every GPU */
    amdsmi_driver_info_t *info = out;
    memset(info, 0, sizeof *info);
    emu_copy_string(info->driver_name, sizeof info->driver_name, "amdgpu");
    emu_copy_string(info->driver_version, sizeof info->driver_version, "6.14.14-emulated");
    emu_copy_string(info->driver_date, sizeof info->driver_date, "2015/01/01 00:00");
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_driver_info(amdsmi_processor_handle handle, amdsmi_driver_info_t *info)
{
    return emu_get(handle, info, fill_driver_info);
}

static amdsmi_status_t fill_board_info(const emu_ctx *ctx, void *out)
{
    amdsmi_board_info_t *info = out;
    memset(info, 0, sizeof *info);
    emu_copy_string(info->model_number, sizeof info->model_number, "102-G30211-00");
    snprintf(info->product_serial, sizeof info->product_serial, "EMU%013llX",
             (unsigned long long)asic_serial(ctx->gpu) & 0xFFFFFFFFFFFFull);
    emu_copy_string(info->product_name, sizeof info->product_name, "AMD Instinct MI300X OAM");
    emu_copy_string(info->manufacturer_name, sizeof info->manufacturer_name, "AMD");
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_board_info(amdsmi_processor_handle handle, amdsmi_board_info_t *info)
{
    return emu_get(handle, info, fill_board_info);
}

AMDSMI_API amdsmi_status_t amdsmi_get_lib_version(amdsmi_version_t *version)
{
    if (version == NULL)
        return AMDSMI_STATUS_INVAL;
    memset(version, 0, sizeof *version);
    version->major = 26; /* AMD-SMI 26.0.2 ships with ROCm 7.0.2 */
    version->minor = 0;
    version->release = 2;
    version->build = "mipart-emulator";
    return AMDSMI_STATUS_SUCCESS;
}
