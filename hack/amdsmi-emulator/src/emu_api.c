#include "emu_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_MAGIC 0xA7ull
#define KIND_SOCKET 1ull
#define KIND_PROCESSOR 2ull

/* amdsmi 7.0.2 reference-counts init/shutdown (AMDSMI changelog 7.0.2). */
static int init_count;

int emu_is_initialized(void)
{
    return __atomic_load_n(&init_count, __ATOMIC_SEQ_CST) > 0;
}

void emu_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("amdsmi-emulator: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void emu_copy_string(char *dst, size_t dstlen, const char *src)
{
    if (dstlen == 0)
        return;
    size_t n = strlen(src);
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static uintptr_t encode(uint64_t kind, int gpu, int partition, uint32_t generation)
{
    return (uintptr_t)((HANDLE_MAGIC << 56) | (kind << 48) | ((uint64_t)(gpu & 0xff) << 40) |
                       ((uint64_t)(partition & 0xff) << 32) | generation);
}

amdsmi_processor_handle emu_make_processor_handle(const emu_state *st, int gpu, int partition)
{
    return (amdsmi_processor_handle)encode(KIND_PROCESSOR, gpu, partition, st->gpus[gpu].generation);
}

amdsmi_socket_handle emu_make_socket_handle(const emu_state *st, int gpu)
{
    return (amdsmi_socket_handle)encode(KIND_SOCKET, gpu, 0, st->epoch);
}

amdsmi_status_t emu_ctx_state(emu_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    if (!emu_is_initialized())
        return AMDSMI_STATUS_NOT_INIT;
    ctx->st = malloc(sizeof *ctx->st);
    if (ctx->st == NULL)
        return AMDSMI_STATUS_OUT_OF_RESOURCES;
    char err[512];
    if (emu_state_load(ctx->st, err, sizeof err)) {
        emu_log("%s", err);
        emu_ctx_close(ctx);
        return AMDSMI_STATUS_FILE_ERROR;
    }
    return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t emu_resolve(const emu_state *st, void *handle, int want_socket, int *gpu_out, int *partition_out)
{
    if (handle == NULL)
        return AMDSMI_STATUS_INVAL;
    uint64_t kind = want_socket ? KIND_SOCKET : KIND_PROCESSOR;
    uint64_t v = (uint64_t)(uintptr_t)handle;
    int gpu = (int)((v >> 40) & 0xff), partition = (int)((v >> 32) & 0xff);
    uint32_t generation = (uint32_t)v;
    int ok = (v >> 56) == HANDLE_MAGIC && ((v >> 48) & 0xff) == kind && gpu < st->num_gpus;
    if (ok && kind == KIND_PROCESSOR)
        ok = generation == st->gpus[gpu].generation && partition < emu_gpu_partitions(st, gpu);
    if (ok && kind == KIND_SOCKET)
        ok = generation == st->epoch;
    if (!ok)
        return AMDSMI_STATUS_NOT_FOUND;
    *gpu_out = gpu;
    *partition_out = kind == KIND_PROCESSOR ? partition : -1;
    return AMDSMI_STATUS_SUCCESS;
}

static amdsmi_status_t resolve(emu_ctx *ctx, void *handle, int want_socket)
{
    memset(ctx, 0, sizeof *ctx);
    if (handle == NULL)
        return AMDSMI_STATUS_INVAL;
    amdsmi_status_t rc = emu_ctx_state(ctx);
    if (rc != AMDSMI_STATUS_SUCCESS)
        return rc;
    rc = emu_resolve(ctx->st, handle, want_socket, &ctx->gpu, &ctx->partition);
    if (rc != AMDSMI_STATUS_SUCCESS) {
        emu_ctx_close(ctx);
        return rc;
    }
    ctx->mode = ctx->st->gpus[ctx->gpu].mode;
    return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t emu_ctx_open(emu_ctx *ctx, amdsmi_processor_handle handle)
{
    return resolve(ctx, handle, 0);
}

amdsmi_status_t emu_ctx_open_socket(emu_ctx *ctx, amdsmi_socket_handle handle)
{
    return resolve(ctx, handle, 1);
}

void emu_ctx_close(emu_ctx *ctx)
{
    free(ctx->st);
    ctx->st = NULL;
}

amdsmi_status_t emu_get(amdsmi_processor_handle handle, void *out, emu_fill_fn fill)
{
    if (out == NULL)
        return AMDSMI_STATUS_INVAL;
    emu_ctx ctx;
    amdsmi_status_t rc = emu_ctx_open(&ctx, handle);
    if (rc == AMDSMI_STATUS_SUCCESS)
        rc = fill(&ctx, out);
    emu_ctx_close(&ctx); /* a failed open leaves nothing to free: closing it is a no-op */
    return rc;
}

int emu_init_ref(int delta)
{
    if (delta > 0)
        return __atomic_add_fetch(&init_count, 1, __ATOMIC_SEQ_CST);
    int cur = __atomic_load_n(&init_count, __ATOMIC_SEQ_CST);
    while (cur > 0 && !__atomic_compare_exchange_n(&init_count, &cur, cur - 1, 0, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_SEQ_CST)) {
    }
    return cur > 0 ? cur - 1 : 0;
}
