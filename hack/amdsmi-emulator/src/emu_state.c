/*
 * The state on disk: its path, a fresh node, values derived from it, and the locked, atomic
 * read-modify-write cycle (the reasons are in emu_state.h). The text format is emu_state_text.c.
 */
#include "emu_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amdsmi_abi.h"

#define EMU_STATE_MAX_BYTES (1 << 20)

void emu_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *emu_state_path(void)
{
    static __thread char path[4096];
    const char *env = getenv(EMU_STATE_ENV);
    if (env != NULL && env[0] != '\0')
        snprintf(path, sizeof path, "%s", env);
    else
        snprintf(path, sizeof path, "/tmp/mipart-amdsmi-emu-%u.state", (unsigned)getuid());
    return path;
}

void emu_state_init_default(emu_state *st, int num_gpus, uint32_t nps_caps, const emu_state *previous)
{
    uint32_t epoch = previous ? previous->epoch + 1 : 1;
    uint32_t gen = previous ? previous->next_generation : 1;
    double delay = previous ? previous->reload_delay_s : EMU_DEFAULT_RELOAD_DELAY_S;
    memset(st, 0, sizeof *st);
    st->num_gpus = num_gpus;
    st->nps_caps = nps_caps;
    st->memory_mode = AMDSMI_MEMORY_PARTITION_NPS1;
    st->pending_memory_mode = 0;
    st->reload_delay_s = delay;
    st->epoch = epoch;
    st->next_generation = gen;
    for (int g = 0; g < num_gpus; g++) {
        st->gpus[g].mode = AMDSMI_COMPUTE_PARTITION_SPX;
        st->gpus[g].generation = st->next_generation++;
    }
}

void emu_bump_gpu(emu_state *st, int gpu, int new_mode)
{
    st->gpus[gpu].mode = new_mode;
    st->gpus[gpu].generation = st->next_generation++;
}

int emu_gpu_partitions(const emu_state *st, int gpu)
{
    return emu_mode_partitions(st->gpus[gpu].mode);
}

int emu_gpu_has_procs(const emu_state *st, int gpu)
{
    for (int i = 0; i < st->num_procs; i++)
        if (st->procs[i].gpu == gpu)
            return 1;
    return 0;
}

int emu_partition_busy(const emu_state *st, int gpu, int partition)
{
    int busy = 0;
    for (int i = 0; i < st->num_procs; i++)
        if (st->procs[i].gpu == gpu && st->procs[i].partition == partition)
            busy += st->procs[i].busy_pct;
    return busy > 100 ? 100 : busy;
}

int emu_gpu_busy(const emu_state *st, int gpu)
{
    int n = emu_gpu_partitions(st, gpu), sum = 0;
    for (int p = 0; p < n; p++)
        sum += emu_partition_busy(st, gpu, p);
    return n ? sum / n : 0;
}

uint64_t emu_partition_vram_used(const emu_state *st, int gpu, int partition)
{
    uint64_t used = 0;
    for (int i = 0; i < st->num_procs; i++)
        if (st->procs[i].gpu == gpu && st->procs[i].partition == partition)
            used += st->procs[i].vram_bytes;
    return used;
}

int emu_flat_index(const emu_state *st, int gpu, int partition)
{
    int index = 0;
    for (int g = 0; g < gpu; g++)
        index += emu_gpu_partitions(st, g);
    return index + partition;
}

/* Reads the file; 1 if it does not exist, 0 on success, -1 on error. */
static int read_state_file(const char *path, emu_state *st, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 1;
        emu_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(EMU_STATE_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        emu_set_err(err, errlen, "out of memory");
        return -1;
    }
    size_t len = fread(buf, 1, EMU_STATE_MAX_BYTES + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || len > EMU_STATE_MAX_BYTES) {
        free(buf);
        emu_set_err(err, errlen, "cannot read %s (or larger than 1 MiB)", path);
        return -1;
    }
    buf[len] = '\0';
    char why[256];
    int rc = emu_state_parse(buf, st, why, sizeof why);
    free(buf);
    if (rc) {
        emu_set_err(err, errlen, "%s: %s", path, why);
        return -1;
    }
    return 0;
}

int emu_txn_begin(emu_txn *txn, emu_state *st, char *err, size_t errlen)
{
    snprintf(txn->path, sizeof txn->path, "%s", emu_state_path());
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s.lock", txn->path);
    txn->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (txn->lock_fd < 0) {
        emu_set_err(err, errlen, "cannot open lock file %s: %s", lock_path, strerror(errno));
        return -1;
    }
    while (flock(txn->lock_fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            emu_set_err(err, errlen, "cannot lock %s: %s", lock_path, strerror(errno));
            emu_txn_end(txn);
            return -1;
        }
    }
    int rc = read_state_file(txn->path, st, err, errlen);
    if (rc == 1) {
        emu_state_init_default(st, EMU_MAX_GPUS, AMDSMI_NPS1_CAP | AMDSMI_NPS4_CAP, NULL);
        rc = emu_txn_commit(txn, st, err, errlen);
    }
    if (rc) {
        emu_txn_end(txn);
        return -1;
    }
    return 0;
}

int emu_txn_commit(emu_txn *txn, const emu_state *st, char *err, size_t errlen)
{
    char why[256];
    if (emu_state_validate(st, why, sizeof why)) {
        emu_set_err(err, errlen, "refusing to write an invalid state: %s", why);
        return -1;
    }
    char *text = emu_state_format(st);
    if (text == NULL) {
        emu_set_err(err, errlen, "out of memory");
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", txn->path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0;
    size_t len = strlen(text), done = 0;
    while (ok && done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        done += ok ? (size_t)w : 0;
    }
    ok = ok && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    ok = ok && rename(tmp, txn->path) == 0;
    free(text);
    if (!ok) {
        saved = errno ? errno : saved;
        unlink(tmp);
        emu_set_err(err, errlen, "cannot write %s: %s", txn->path, strerror(saved));
        return -1;
    }
    return 0;
}

void emu_txn_end(emu_txn *txn)
{
    if (txn->lock_fd >= 0) {
        flock(txn->lock_fd, LOCK_UN);
        close(txn->lock_fd);
        txn->lock_fd = -1;
    }
}

int emu_state_load(emu_state *st, char *err, size_t errlen)
{
    int rc = read_state_file(emu_state_path(), st, err, errlen);
    if (rc != 1)
        return rc;
    /* Absent: create it under the lock, so two first users agree on one file. */
    emu_txn txn;
    if (emu_txn_begin(&txn, st, err, errlen))
        return -1;
    emu_txn_end(&txn);
    return 0;
}
