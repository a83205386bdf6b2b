/*
 * VRAM and processes. Scope is the partition the handle names: total = that XCP's share of the
 * 196592 MiB (KFD's per-XCP size, which HIP/torch see: 24574 MiB in CPX), used = the sum of the
 * fake processes on that partition, with no idle baseline. Real amd-smi is inconsistent here
 * (some paths report device-wide numbers on partitions: docs/facts-mi300x.md, "What monitoring
 * tools report"); the emulator gives the per-partition view a partition manager needs and
 * documents it in README.md.
 */
#include <string.h>
#include <time.h>

#include "emu_api.h"

static amdsmi_status_t memory_query(amdsmi_processor_handle handle, uint32_t type, uint64_t *out, int used)
{
    if (out == NULL)
        return AMDSMI_STATUS_INVAL;
    if (type == AMDSMI_MEM_TYPE_GTT)
        return AMDSMI_STATUS_NOT_SUPPORTED; /* host memory: not modelled */
    if (type != AMDSMI_MEM_TYPE_VRAM && type != AMDSMI_MEM_TYPE_VIS_VRAM)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    /* MI300X has a large BAR: visible VRAM is all of VRAM. */
    *out = used ? emu_partition_vram_used(ctx.st, ctx.gpu, ctx.partition) : emu_partition_vram_bytes(ctx.mode);
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle handle, uint32_t type, uint64_t *total)
{
    return memory_query(handle, type, total, 0);
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_memory_usage(amdsmi_processor_handle handle, uint32_t type, uint64_t *used)
{
    return memory_query(handle, type, used, 1);
}

static amdsmi_status_t fill_vram_usage(const emu_ctx *ctx, void *out)
{
    amdsmi_vram_usage_t *usage = out;
    memset(usage, 0, sizeof *usage);
    usage->vram_total = emu_partition_vram_mib(ctx->mode);
    usage->vram_used = (uint32_t)(emu_partition_vram_used(ctx->st, ctx->gpu, ctx->partition) / EMU_MIB);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_vram_usage(amdsmi_processor_handle handle, amdsmi_vram_usage_t *usage)
{
    return emu_get(handle, usage, fill_vram_usage);
}

static amdsmi_status_t fill_vram_info(const emu_ctx *ctx, void *out)
{
    amdsmi_vram_info_t *info = out;
    int n = emu_mode_partitions(ctx->mode);
    memset(info, 0, sizeof *info);
    info->vram_type = AMDSMI_VRAM_TYPE_HBM3;
    emu_copy_string(info->vram_vendor, sizeof info->vram_vendor, "HYNIX");
    info->vram_size = emu_partition_vram_mib(ctx->mode);  /* MB, this partition's share */
    info->vram_bit_width = 8192u / (uint32_t)n;           /* 8 HBM3 stacks x 1024 bits */
    info->vram_max_bandwidth = 5300u / (uint64_t)n;       /* GB/s, 5.3 TB/s per MI300X */
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_vram_info(amdsmi_processor_handle handle, amdsmi_vram_info_t *info)
{
    return emu_get(handle, info, fill_vram_info);
}

static void fill_proc(const emu_proc *p, int mode, amdsmi_proc_info_t *out)
{
    memset(out, 0, sizeof *out);
    emu_copy_string(out->name, sizeof out->name, p->name);
    out->pid = p->pid;
    out->mem = p->vram_bytes;
    int64_t elapsed = (int64_t)time(NULL) - p->started;
    if (elapsed < 0)
        elapsed = 0;
    /* Engine time in ns: busy% of the wall time since the process was added. */
    out->engine_usage.gfx = (uint64_t)elapsed * 10000000ull * (uint64_t)p->busy_pct;
    out->memory_usage.vram_mem = p->vram_bytes;
    out->cu_occupancy = emu_partition_cus(mode) * (uint32_t)p->busy_pct / 100u;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_process_list(amdsmi_processor_handle handle, uint32_t *max_processes,
                                                       amdsmi_proc_info_t *list)
{
    if (max_processes == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    uint32_t found = 0, filled = 0;
    for (int i = 0; i < ctx.st->num_procs; i++) {
        const emu_proc *p = &ctx.st->procs[i];
        if (p->gpu != ctx.gpu || p->partition != ctx.partition)
            continue;
        if (list != NULL && filled < *max_processes)
            fill_proc(p, ctx.mode, &list[filled++]);
        found++;
    }
    /* As in amdsmi: a NULL list or a zero size asks for the count; a short list is filled and
     * answered with OUT_OF_RESOURCES. */
    if (list == NULL || *max_processes == 0) {
        *max_processes = found;
    } else {
        if (found > *max_processes)
            rc = AMDSMI_STATUS_OUT_OF_RESOURCES;
        *max_processes = filled;
    }
    emu_ctx_close(&ctx);
    return rc;
}

/* KFD view (rsmi_compute_process_info*): one entry per pid, VRAM summed over its partitions. */
static void kfd_entry(const emu_state *st, uint32_t pid, amdsmi_process_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->process_id = pid;
    for (int i = 0; i < st->num_procs; i++) {
        const emu_proc *p = &st->procs[i];
        if (p->pid != pid)
            continue;
        out->vram_usage += p->vram_bytes;
        out->cu_occupancy += emu_partition_cus(st->gpus[p->gpu].mode) * (uint32_t)p->busy_pct / 100u;
    }
}

static int first_of_pid(const emu_state *st, int index)
{
    for (int j = 0; j < index; j++)
        if (st->procs[j].pid == st->procs[index].pid)
            return 0;
    return 1;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_compute_process_info(amdsmi_process_info_t *procs, uint32_t *num_items)
{
    if (num_items == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    uint32_t found = 0, filled = 0;
    for (int i = 0; i < ctx.st->num_procs; i++) {
        if (!first_of_pid(ctx.st, i))
            continue;
        if (procs != NULL && filled < *num_items)
            kfd_entry(ctx.st, ctx.st->procs[i].pid, &procs[filled++]);
        found++;
    }
    *num_items = procs == NULL ? found : filled;
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_compute_process_info_by_pid(uint32_t pid, amdsmi_process_info_t *proc)
{
    if (proc == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    rc = AMDSMI_STATUS_NOT_FOUND;
    for (int i = 0; i < ctx.st->num_procs; i++) {
        if (ctx.st->procs[i].pid == pid) {
            kfd_entry(ctx.st, pid, proc);
            rc = AMDSMI_STATUS_SUCCESS;
            break;
        }
    }
    emu_ctx_close(&ctx);
    return rc;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_compute_process_gpus(uint32_t pid, uint32_t *indices, uint32_t *num_devices)
{
    if (num_devices == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_state(&ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    uint32_t found = 0, filled = 0;
    for (int i = 0; i < ctx.st->num_procs; i++) {
        const emu_proc *p = &ctx.st->procs[i];
        if (p->pid != pid)
            continue;
        /* The index is the processor's position in amdsmi_get_processor_handles() order. */
        if (indices != NULL && filled < *num_devices)
            indices[filled++] = (uint32_t)emu_flat_index(ctx.st, p->gpu, p->partition);
        found++;
    }
    if (found == 0)
        rc = AMDSMI_STATUS_NOT_FOUND;
    *num_devices = indices == NULL ? found : filled;
    emu_ctx_close(&ctx);
    return rc;
}
