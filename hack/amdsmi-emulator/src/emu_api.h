/*
 * Shared plumbing of the API files: init reference count, handle encoding, and the per-call
 * context (state read fresh from the file + the handle's GPU and partition).
 *
 * A handle is not a pointer but a tagged 64-bit value (amdsmi's handles are opaque void*):
 *   bits 56-63 magic 0xA7 | 48-55 kind | 40-47 GPU | 32-39 partition | 0-31 generation
 * A processor handle carries its GPU's generation, which changes on every compute-mode change
 * of that GPU, driver reload, reboot and reset; a socket handle carries the node epoch (reload,
 * reboot, reset). A handle whose generation no longer matches is stale and every call with it
 * answers AMDSMI_STATUS_NOT_FOUND - what the real library answers for a handle that is not in
 * its processor list - so a caller must re-enumerate after a mode change, as on hardware.
 */
#ifndef MIPART_EMU_API_H
#define MIPART_EMU_API_H

#include <stddef.h>
#include <stdint.h>

#include "amdsmi_abi.h"
#include "emu_state.h"

typedef struct {
    emu_state *st;
    int gpu;
    int partition;
    int mode;
} emu_ctx;

int emu_is_initialized(void);
/* Adds or drops one init reference; returns the new count (never below 0). */
int emu_init_ref(int delta);

/* Loads the state; checks init. On failure nothing needs closing. */
amdsmi_status_t emu_ctx_state(emu_ctx *ctx);
/* Loads the state and resolves a processor handle. */
amdsmi_status_t emu_ctx_open(emu_ctx *ctx, amdsmi_processor_handle handle);
/* Loads the state and resolves a socket handle (partition is -1). */
amdsmi_status_t emu_ctx_open_socket(emu_ctx *ctx, amdsmi_socket_handle handle);
void emu_ctx_close(emu_ctx *ctx);

/* Writes a getter's answer to `out` from an open context; returns the call's status. */
typedef amdsmi_status_t (*emu_fill_fn)(const emu_ctx *ctx, void *out);

/* The body most processor getters share: AMDSMI_STATUS_INVAL for a NULL `out` (checked first, so
 * it wins over NOT_INIT and a bad handle), then open the handle's context, `fill`, close. Keeps
 * each exported getter down to its ABI prototype and what it answers. */
amdsmi_status_t emu_get(amdsmi_processor_handle handle, void *out, emu_fill_fn fill);

/* A getter whose whole answer is one expression of the open context `ctx` (a const emu_ctx *):
 *   EMU_SIMPLE_GETTER(amdsmi_get_gpu_id, uint16_t, 0x74a1)
 * defines the exported `amdsmi_status_t amdsmi_get_gpu_id(amdsmi_processor_handle, uint16_t *)`,
 * the prototype amdsmi declares, answering through emu_get(). */
#define EMU_SIMPLE_GETTER(name, type, expr)                                         \
    static amdsmi_status_t fill_##name(const emu_ctx *ctx, void *out)               \
    {                                                                               \
        (void)ctx; /* a constant answer does not look at it */                      \
        *(type *)out = (expr);                                                      \
        return AMDSMI_STATUS_SUCCESS;                                               \
    }                                                                               \
    AMDSMI_API amdsmi_status_t name(amdsmi_processor_handle handle, type *out)      \
    {                                                                               \
        return emu_get(handle, out, fill_##name);                                   \
    }
/* Resolves a handle against an already loaded state (used inside write transactions). */
amdsmi_status_t emu_resolve(const emu_state *st, void *handle, int want_socket, int *gpu, int *partition);

amdsmi_processor_handle emu_make_processor_handle(const emu_state *st, int gpu, int partition);
amdsmi_socket_handle emu_make_socket_handle(const emu_state *st, int gpu);

/* Prints "amdsmi-emulator: <msg>" on stderr: the library's only channel for why a call failed
 * beyond the status code (e.g. an unreadable state file). */
void emu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void emu_copy_string(char *dst, size_t dstlen, const char *src);

#endif
