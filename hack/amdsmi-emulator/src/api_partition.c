/*
 * Compute (accelerator) and memory (NPS) partitioning, and the driver reload that applies an
 * NPS change. Rules from docs/facts-mi300x.md (#valid-combinations, #changing-modes):
 *  - compute mode is per physical GPU, applies at once, and needs the GPU free of processes
 *    (KFD answers -EBUSY -> AMDSMI_STATUS_BUSY);
 *  - a compute mode the current NPS mode does not allow -> AMDSMI_STATUS_SETTING_UNAVAILABLE
 *    (it is missing from available_compute_partition; e.g. SPX under NPS4);
 *  - NPS is node-wide (one xGMI hive); since ROCm 7.0 setting it only queues the request, and
 *    amdsmi_gpu_driver_reload() applies it, resetting every GPU's compute mode to the driver's
 *    AUTO choice; the reload fails with AMDSMI_STATUS_AMDGPU_RESTART_ERR while anything uses
 *    a GPU.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu_api.h"

static amdsmi_status_t copy_name(const char *name, char *buf, uint32_t len)
{
    if (buf == NULL || len == 0)
        return AMDSMI_STATUS_INVAL;
    emu_copy_string(buf, len, name);
    return strlen(name) + 1 > len ? AMDSMI_STATUS_INSUFFICIENT_SIZE : AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_compute_partition(amdsmi_processor_handle handle, char *buf, uint32_t len)
{
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    rc = copy_name(emu_mode_name(ctx.mode), buf, len);
    emu_ctx_close(&ctx);
    return rc;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_memory_partition(amdsmi_processor_handle handle, char *buf, uint32_t len)
{
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    /* The applied mode: a pending request does not show until the reload (sysfs
     * current_memory_partition behaves the same). */
    rc = copy_name(emu_nps_name(ctx.st->memory_mode), buf, len);
    emu_ctx_close(&ctx);
    return rc;
}

/* A change to the state, for the GPU `gpu` (-1 for a node-wide change); it is committed only
 * when it answers AMDSMI_STATUS_SUCCESS. */
typedef amdsmi_status_t (*emu_change_fn)(emu_state *st, int gpu, uint32_t arg);

/* Runs `change` inside an exclusive transaction (lock, re-read, change, commit), so concurrent
 * writers (the CLI, other daemons) lose no update. A NULL `handle` makes the change node-wide;
 * any other is resolved against the locked state first, so a stale one changes nothing. */
static amdsmi_status_t run_change(amdsmi_processor_handle handle, emu_change_fn change, uint32_t arg)
{
    if (!emu_is_initialized())
        return AMDSMI_STATUS_NOT_INIT;
    emu_state *st = malloc(sizeof *st);
    if (st == NULL)
        return AMDSMI_STATUS_OUT_OF_RESOURCES;
    emu_txn txn;
    char err[512];
    if (emu_txn_begin(&txn, st, err, sizeof err)) {
        emu_log("%s", err);
        free(st);
        return AMDSMI_STATUS_FILE_ERROR;
    }
    int gpu = -1, partition;
    amdsmi_status_t rc = AMDSMI_STATUS_SUCCESS;
    if (handle != NULL)
        rc = emu_resolve(st, handle, 0, &gpu, &partition);
    if (rc == AMDSMI_STATUS_SUCCESS)
        rc = change(st, gpu, arg);
    if (rc == AMDSMI_STATUS_SUCCESS && emu_txn_commit(&txn, st, err, sizeof err)) {
        emu_log("%s", err);
        rc = AMDSMI_STATUS_FILE_ERROR;
    }
    emu_txn_end(&txn);
    free(st);
    return rc;
}

/* The per-GPU setters answer NOT_INIT, then INVAL for a NULL handle, before the state file is
 * locked or read (a NULL handle would otherwise mean node-wide to run_change). */
static amdsmi_status_t transact(amdsmi_processor_handle handle, emu_change_fn change, uint32_t arg)
{
    if (!emu_is_initialized())
        return AMDSMI_STATUS_NOT_INIT;
    if (handle == NULL)
        return AMDSMI_STATUS_INVAL;
    return run_change(handle, change, arg);
}

static amdsmi_status_t change_compute_mode(emu_state *st, int gpu, uint32_t mode)
{
    if (mode < AMDSMI_COMPUTE_PARTITION_SPX || mode > AMDSMI_COMPUTE_PARTITION_CPX)
        return AMDSMI_STATUS_INVAL;
    /* TPX is never in MI300X's available_compute_partition; the NPS rule comes next. */
    if (emu_mode_partitions((int)mode) == 0)
        return AMDSMI_STATUS_SETTING_UNAVAILABLE;
    if (!(emu_mode_nps_mask((int)mode) & emu_nps_cap_bit(st->memory_mode)))
        return AMDSMI_STATUS_SETTING_UNAVAILABLE;
    if ((int)mode == st->gpus[gpu].mode)
        return AMDSMI_STATUS_SUCCESS; /* nothing to switch; handles stay valid */
    if (emu_gpu_has_procs(st, gpu))
        return AMDSMI_STATUS_BUSY;
    emu_bump_gpu(st, gpu, (int)mode);
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_set_gpu_compute_partition(amdsmi_processor_handle handle, uint32_t mode)
{
    return transact(handle, change_compute_mode, mode);
}

static amdsmi_status_t change_profile(emu_state *st, int gpu, uint32_t index)
{
    int mode = emu_profile_mode(index);
    return mode ? change_compute_mode(st, gpu, (uint32_t)mode) : AMDSMI_STATUS_INVAL;
}

AMDSMI_API amdsmi_status_t amdsmi_set_gpu_accelerator_partition_profile(amdsmi_processor_handle handle,
                                                                        uint32_t profile_index)
{
    return transact(handle, change_profile, profile_index);
}

static amdsmi_status_t change_memory_mode(emu_state *st, int gpu, uint32_t nps)
{
    (void)gpu; /* NPS is node-wide: any GPU of the hive takes the request for all */
    if (nps != AMDSMI_MEMORY_PARTITION_NPS1 && nps != AMDSMI_MEMORY_PARTITION_NPS2 &&
        nps != AMDSMI_MEMORY_PARTITION_NPS4 && nps != AMDSMI_MEMORY_PARTITION_NPS8)
        return AMDSMI_STATUS_INVAL;
    /* NPS8 is in the API but not a supported MI300X configuration; NPS2 only where the
     * firmware lists it (available_memory_partition). */
    if (!(st->nps_caps & emu_nps_cap_bit((int)nps)))
        return AMDSMI_STATUS_NOT_SUPPORTED;
    st->pending_memory_mode = (int)nps == st->memory_mode ? 0 : (int)nps;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_set_gpu_memory_partition(amdsmi_processor_handle handle, uint32_t nps)
{
    return transact(handle, change_memory_mode, nps);
}

AMDSMI_API amdsmi_status_t amdsmi_set_gpu_memory_partition_mode(amdsmi_processor_handle handle, uint32_t nps)
{
    return transact(handle, change_memory_mode, nps);
}

static amdsmi_status_t fill_memory_partition_config(const emu_ctx *ctx, void *out)
{
    amdsmi_memory_partition_config_t *config = out;
    memset(config, 0, sizeof *config);
    config->partition_caps.nps_cap_mask = ctx->st->nps_caps;
    config->mp_mode = (uint32_t)ctx->st->memory_mode;
    /* One NUMA range per memory partition of this GPU's HBM. */
    uint32_t ranges = (uint32_t)ctx->st->memory_mode;
    uint64_t size = EMU_GPU_VRAM_MIB * EMU_MIB / ranges;
    config->num_numa_ranges = ranges;
    for (uint32_t i = 0; i < ranges; i++) {
        config->numa_range[i].memory_type = AMDSMI_VRAM_TYPE_HBM3;
        config->numa_range[i].start = i * size;
        config->numa_range[i].end = (i + 1) * size - 1;
    }
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_memory_partition_config(amdsmi_processor_handle handle,
                                                                  amdsmi_memory_partition_config_t *config)
{
    return emu_get(handle, config, fill_memory_partition_config);
}

static void fill_profile(const emu_state *st, int mode, amdsmi_accelerator_partition_profile_t *profile)
{
    int index = emu_mode_profile(mode);
    memset(profile, 0, sizeof *profile);
    profile->profile_type = (uint32_t)mode;
    profile->num_partitions = (uint32_t)emu_mode_partitions(mode);
    profile->memory_caps.nps_cap_mask = emu_mode_nps_mask(mode) & st->nps_caps;
    profile->profile_index = (uint32_t)index;
    profile->num_resources = 4;
    for (uint32_t r = 0; r < 4; r++)
        profile->resources[0][r] = (uint32_t)index * 4 + r; /* indexes into resource_profiles */
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_accelerator_partition_profile(amdsmi_processor_handle handle,
                                                                        amdsmi_accelerator_partition_profile_t *profile,
                                                                        uint32_t *partition_id)
{
    if (profile == NULL || partition_id == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    fill_profile(ctx.st, ctx.mode, profile);
    /* The wrapper reads partition_id[0] as "this processor's partition id". */
    partition_id[0] = (uint32_t)ctx.partition;
    emu_ctx_close(&ctx);
    return AMDSMI_STATUS_SUCCESS;
}

static amdsmi_status_t fill_profile_config(const emu_ctx *ctx, void *out)
{
    amdsmi_accelerator_partition_profile_config_t *config = out;
    memset(config, 0, sizeof *config);
    config->num_profiles = EMU_NUM_PROFILES;
    config->default_profile_index = 0;
    /* The 7.0.2 wrapper walks num_resource_profiles entries *per profile* through one running
     * index, so it is the per-profile count here (4 x 4 = 16 entries of 32). */
    config->num_resource_profiles = 4;
    for (uint32_t i = 0; i < EMU_NUM_PROFILES; i++) {
        int mode = emu_profile_mode(i), n = emu_mode_partitions(mode);
        fill_profile(ctx->st, mode, &config->profiles[i]);
        /* Per partition: its XCCs, VCN decoders, SDMA engines (2 per XCD), JPEG engines
         * (8 per VCN). In CPX two partitions share one VCN and its JPEGs (ISS-132). */
        const uint32_t types[4] = {AMDSMI_ACCELERATOR_XCC, AMDSMI_ACCELERATOR_DECODER,
                                   AMDSMI_ACCELERATOR_DMA, AMDSMI_ACCELERATOR_JPEG};
        const uint32_t amount[4] = {8u / (uint32_t)n, n >= 8 ? 1u : 4u / (uint32_t)n, 16u / (uint32_t)n,
                                    n >= 8 ? 8u : 32u / (uint32_t)n};
        const uint32_t share[4] = {1, n >= 8 ? 2u : 1u, 1, n >= 8 ? 2u : 1u};
        for (uint32_t r = 0; r < 4; r++) {
            amdsmi_accelerator_partition_resource_profile_t *res = &config->resource_profiles[i * 4 + r];
            res->profile_index = i;
            res->resource_type = types[r];
            res->partition_resource = amount[r];
            res->num_partitions_share_resource = share[r];
        }
    }
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_get_gpu_accelerator_partition_profile_config(
    amdsmi_processor_handle handle, amdsmi_accelerator_partition_profile_config_t *config)
{
    return emu_get(handle, config, fill_profile_config);
}

static double reload_delay(const emu_state *st)
{
    const char *env = getenv(EMU_RELOAD_ENV);
    if (env != NULL && env[0] != '\0') {
        char *end = NULL;
        double v = strtod(env, &end);
        if (*end == '\0' && isfinite(v) && v >= 0 && v <= 3600)
            return v;
        emu_log("ignoring %s=%s (want seconds, 0-3600)", EMU_RELOAD_ENV, env);
    }
    return st->reload_delay_s;
}

static void sleep_seconds(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - floor(seconds)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static amdsmi_status_t reload_driver(emu_state *st, int gpu, uint32_t arg)
{
    (void)gpu; /* node-wide: every GPU of the hive reloads */
    (void)arg;
    if (st->num_procs > 0) {
        /* modprobe -r amdgpu fails while a process holds /dev/kfd. */
        emu_log("driver reload refused: %d fake process(es) still use the GPUs", st->num_procs);
        return AMDSMI_STATUS_AMDGPU_RESTART_ERR;
    }
    /* The lock is held through the delay: other writers (the CLI, another daemon) wait,
     * readers keep seeing the old modes until the reload completes. */
    sleep_seconds(reload_delay(st));
    if (st->pending_memory_mode != 0)
        st->memory_mode = st->pending_memory_mode;
    st->pending_memory_mode = 0;
    for (int g = 0; g < st->num_gpus; g++)
        emu_bump_gpu(st, g, emu_auto_mode(st->memory_mode));
    st->epoch++;
    return AMDSMI_STATUS_SUCCESS;
}

AMDSMI_API amdsmi_status_t amdsmi_gpu_driver_reload(void)
{
    return run_change(NULL, reload_driver, 0);
}
