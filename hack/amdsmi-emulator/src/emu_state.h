/*
 * The emulated node's state, kept in one small text file so that it outlives the processes that
 * use it (a daemon restart keeps the partition modes; `amdsmi-emu reboot` reverts them) and so
 * that the CLI and any number of daemons see each other's changes at once.
 *
 * Readers parse the whole file on every API call: it is a few KB, and there is then no cache to
 * go stale. Writers take an exclusive flock on "<state>.lock", re-read, change, write
 * "<state>.tmp.<pid>" and rename it over the state file, so a reader always sees either the old
 * or the new file, never half of one. The format is described in README.md.
 */
#ifndef MIPART_EMU_STATE_H
#define MIPART_EMU_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "emu_model.h"

#define EMU_MAX_PROCS 256
#define EMU_PROC_NAME_MAX 256
#define EMU_DEFAULT_RELOAD_DELAY_S 3.0
#define EMU_STATE_ENV "MIPART_EMULATOR_STATE"
#define EMU_RELOAD_ENV "MIPART_EMULATOR_RELOAD_SECONDS"

typedef struct {
    int mode;            /* compute mode, amdsmi enum value */
    uint32_t generation; /* changes whenever this GPU's partitions change: older handles are stale */
} emu_gpu;

typedef struct {
    uint32_t pid;
    int gpu;
    int partition;
    uint64_t vram_bytes;
    int busy_pct;
    int64_t started; /* unix seconds; engine time in the process list grows from here */
    char name[EMU_PROC_NAME_MAX];
} emu_proc;

typedef struct {
    int num_gpus;
    uint32_t nps_caps;       /* AMDSMI_NPSn_CAP bits the firmware offers */
    int memory_mode;         /* applied, node-wide (one xGMI hive) */
    int pending_memory_mode; /* set but not applied until a driver reload; 0 = none */
    double reload_delay_s;
    uint32_t epoch;           /* changes on reload/reboot/reset: socket handles go stale */
    uint32_t next_generation; /* source of emu_gpu.generation values, never reused */
    emu_gpu gpus[EMU_MAX_GPUS];
    int num_procs;
    emu_proc procs[EMU_MAX_PROCS];
} emu_state;

typedef struct {
    int lock_fd;
    char path[4096];
} emu_txn;

const char *emu_state_path(void);

/* A fresh node: every GPU SPX, NPS1, no pending mode, no processes. Counters continue from
 * `previous` when given, so that handles from before a reset can never match again. */
void emu_state_init_default(emu_state *st, int num_gpus, uint32_t nps_caps,
                            const emu_state *previous);

/* Reads the state file, creating it with the defaults when absent. 0 or -1 with `err` set. */
int emu_state_load(emu_state *st, char *err, size_t errlen);

/* Exclusive transaction: lock, load (creating if absent), then commit any number of times. */
int emu_txn_begin(emu_txn *txn, emu_state *st, char *err, size_t errlen);
int emu_txn_commit(emu_txn *txn, const emu_state *st, char *err, size_t errlen);
void emu_txn_end(emu_txn *txn);

/* Writes a message into an `err` buffer, which callers may leave out (NULL or 0 bytes). Shared by
 * emu_state.c and emu_state_text.c, which report errors the same way. */
void emu_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Formatting and parsing, exposed for the CLI and tests. */
int emu_state_parse(const char *text, emu_state *st, char *err, size_t errlen);
char *emu_state_format(const emu_state *st); /* malloc'd */
int emu_state_validate(const emu_state *st, char *err, size_t errlen);
void emu_format_caps(uint32_t caps, char *out, size_t outlen);
int emu_parse_caps(const char *text, uint32_t *caps, char *err, size_t errlen);

/* Derived from the state. */
int emu_gpu_partitions(const emu_state *st, int gpu);
int emu_gpu_has_procs(const emu_state *st, int gpu);
int emu_partition_busy(const emu_state *st, int gpu, int partition); /* 0-100 */
int emu_gpu_busy(const emu_state *st, int gpu);                      /* 0-100, mean of partitions */
uint64_t emu_partition_vram_used(const emu_state *st, int gpu, int partition);
int emu_flat_index(const emu_state *st, int gpu, int partition); /* HIP ordinal */
void emu_bump_gpu(emu_state *st, int gpu, int new_mode);

#endif
