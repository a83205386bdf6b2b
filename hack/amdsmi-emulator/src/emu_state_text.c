/*
 * The state file's text format (README.md, "State file"): parse, validate, format. Strict on
 * purpose: a hand edit with a typo or an impossible combination is reported with its line,
 * never guessed around.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amdsmi_abi.h"
#include "emu_state.h"

void emu_format_caps(uint32_t caps, char *out, size_t outlen)
{
    static const int modes[] = {1, 2, 4, 8};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (!(caps & emu_nps_cap_bit(modes[i])))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", emu_nps_name(modes[i]));
        if (n < 0 || (size_t)n >= outlen - used)
            break;
        used += (size_t)n;
    }
}

int emu_parse_caps(const char *text, uint32_t *caps, char *err, size_t errlen)
{
    char buf[128];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int)sizeof buf) {
        emu_set_err(err, errlen, "memory partition caps too long: '%s'", text);
        return -1;
    }
    uint32_t mask = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int nps = emu_nps_parse(tok);
        if (nps == 0) {
            emu_set_err(err, errlen, "unknown memory partition mode '%s' (use NPS1, NPS2, NPS4)", tok);
            return -1;
        }
        if (nps == AMDSMI_MEMORY_PARTITION_NPS8) {
            emu_set_err(err, errlen, "NPS8 is defined in the API but not supported on MI300X");
            return -1;
        }
        mask |= emu_nps_cap_bit(nps);
    }
    if (!(mask & AMDSMI_NPS1_CAP)) {
        emu_set_err(err, errlen, "memory partition caps must include NPS1 (got '%s')", text);
        return -1;
    }
    *caps = mask;
    return 0;
}

int emu_state_validate(const emu_state *st, char *err, size_t errlen)
{
    if (st->num_gpus < 1 || st->num_gpus > EMU_MAX_GPUS) {
        emu_set_err(err, errlen, "gpus must be 1..%d, got %d", EMU_MAX_GPUS, st->num_gpus);
        return -1;
    }
    if (!(st->nps_caps & AMDSMI_NPS1_CAP) || (st->nps_caps & ~(AMDSMI_NPS1_CAP | AMDSMI_NPS2_CAP | AMDSMI_NPS4_CAP))) {
        emu_set_err(err, errlen, "nps_caps must include NPS1 and only NPS1, NPS2, NPS4");
        return -1;
    }
    if (!(st->nps_caps & emu_nps_cap_bit(st->memory_mode))) {
        emu_set_err(err, errlen, "memory_mode %s is not in nps_caps", emu_nps_name(st->memory_mode));
        return -1;
    }
    if (st->pending_memory_mode != 0 && !(st->nps_caps & emu_nps_cap_bit(st->pending_memory_mode))) {
        emu_set_err(err, errlen, "pending_memory_mode %s is not in nps_caps", emu_nps_name(st->pending_memory_mode));
        return -1;
    }
    if (st->reload_delay_s < 0 || st->reload_delay_s > 3600) {
        emu_set_err(err, errlen, "reload_delay_s must be 0..3600");
        return -1;
    }
    for (int g = 0; g < st->num_gpus; g++) {
        int mode = st->gpus[g].mode;
        if (emu_mode_partitions(mode) == 0) {
            emu_set_err(err, errlen, "gpu %d: compute mode %s is not supported on MI300X", g, emu_mode_name(mode));
            return -1;
        }
        if (!(emu_mode_nps_mask(mode) & emu_nps_cap_bit(st->memory_mode))) {
            emu_set_err(err, errlen, "gpu %d: %s is not valid with %s", g, emu_mode_name(mode), emu_nps_name(st->memory_mode));
            return -1;
        }
    }
    for (int i = 0; i < st->num_procs; i++) {
        const emu_proc *p = &st->procs[i];
        if (p->gpu < 0 || p->gpu >= st->num_gpus || p->partition < 0 || p->partition >= emu_gpu_partitions(st, p->gpu)) {
            emu_set_err(err, errlen, "process %u sits on gpu %d partition %d, which does not exist", p->pid, p->gpu, p->partition);
            return -1;
        }
        if (p->busy_pct < 0 || p->busy_pct > 100) {
            emu_set_err(err, errlen, "process %u: busy must be 0..100", p->pid);
            return -1;
        }
    }
    return 0;
}

/* Splits off the next whitespace-separated word. */
static char *next_word(char **cursor)
{
    char *s = *cursor;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '\0')
        return NULL;
    char *word = s;
    while (*s && *s != ' ' && *s != '\t')
        s++;
    if (*s)
        *s++ = '\0';
    *cursor = s;
    return word;
}

static int parse_u64(const char *word, uint64_t *out)
{
    if (word == NULL || *word == '\0' || *word == '-')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(word, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_int(const char *word, int lo, int hi, int *out)
{
    uint64_t v;
    if (parse_u64(word, &v) || v < (uint64_t)lo || v > (uint64_t)hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* Expects `key` then a value; returns the value word or NULL. */
static char *expect(char **cursor, const char *key)
{
    char *word = next_word(cursor);
    if (word == NULL || strcmp(word, key) != 0)
        return NULL;
    return next_word(cursor);
}

static int parse_gpu_line(char *rest, emu_state *st, int *seen)
{
    int g, mode;
    uint64_t gen;
    char *word = next_word(&rest);
    if (parse_int(word, 0, EMU_MAX_GPUS - 1, &g))
        return -1;
    word = expect(&rest, "mode");
    if (word == NULL || (mode = emu_mode_parse(word)) == 0)
        return -1;
    if (parse_u64(expect(&rest, "generation"), &gen) || gen > UINT32_MAX || next_word(&rest))
        return -1;
    st->gpus[g].mode = mode;
    st->gpus[g].generation = (uint32_t)gen;
    seen[g] = 1;
    return 0;
}

static int parse_proc_line(char *rest, emu_state *st)
{
    if (st->num_procs >= EMU_MAX_PROCS)
        return -1;
    emu_proc *p = &st->procs[st->num_procs];
    uint64_t pid, vram, started;
    if (parse_u64(expect(&rest, "pid"), &pid) || pid == 0 || pid > UINT32_MAX)
        return -1;
    if (parse_int(expect(&rest, "gpu"), 0, EMU_MAX_GPUS - 1, &p->gpu))
        return -1;
    if (parse_int(expect(&rest, "partition"), 0, EMU_MAX_PARTITIONS - 1, &p->partition))
        return -1;
    if (parse_u64(expect(&rest, "vram"), &vram))
        return -1;
    if (parse_int(expect(&rest, "busy"), 0, 100, &p->busy_pct))
        return -1;
    if (parse_u64(expect(&rest, "started"), &started))
        return -1;
    /* The name is the rest of the line and may contain spaces. */
    char *word = next_word(&rest);
    if (word == NULL || strcmp(word, "name") != 0)
        return -1;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest == '\0' || strlen(rest) >= EMU_PROC_NAME_MAX)
        return -1;
    p->pid = (uint32_t)pid;
    p->vram_bytes = vram;
    p->started = (int64_t)started;
    snprintf(p->name, sizeof p->name, "%s", rest);
    st->num_procs++;
    return 0;
}

int emu_state_parse(const char *text, emu_state *st, char *err, size_t errlen)
{
    char *copy = strdup(text);
    if (copy == NULL) {
        emu_set_err(err, errlen, "out of memory");
        return -1;
    }
    memset(st, 0, sizeof *st);
    st->reload_delay_s = EMU_DEFAULT_RELOAD_DELAY_S;
    st->nps_caps = AMDSMI_NPS1_CAP | AMDSMI_NPS4_CAP;
    st->memory_mode = AMDSMI_MEMORY_PARTITION_NPS1;
    int seen_gpu[EMU_MAX_GPUS] = {0}, have_format = 0, lineno = 0, rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *rest = line, *key = next_word(&rest), *value;
        size_t len = strlen(rest);
        while (len && (rest[len - 1] == '\r' || rest[len - 1] == ' '))
            rest[--len] = '\0';
        if (key == NULL || key[0] == '#')
            continue;
        int bad = 0;
        if (strcmp(key, "format") == 0) {
            value = next_word(&rest);
            bad = value == NULL || strcmp(value, "1") != 0;
            have_format = 1;
        } else if (strcmp(key, "gpus") == 0) {
            bad = parse_int(next_word(&rest), 1, EMU_MAX_GPUS, &st->num_gpus);
        } else if (strcmp(key, "nps_caps") == 0) {
            value = next_word(&rest);
            bad = value == NULL || emu_parse_caps(value, &st->nps_caps, NULL, 0);
        } else if (strcmp(key, "memory_mode") == 0) {
            value = next_word(&rest);
            bad = value == NULL || (st->memory_mode = emu_nps_parse(value)) == 0;
        } else if (strcmp(key, "pending_memory_mode") == 0) {
            value = next_word(&rest);
            if (value != NULL && strcmp(value, "none") == 0)
                st->pending_memory_mode = 0;
            else
                bad = value == NULL || (st->pending_memory_mode = emu_nps_parse(value)) == 0;
        } else if (strcmp(key, "reload_delay_s") == 0) {
            value = next_word(&rest);
            char *end = NULL;
            st->reload_delay_s = value ? strtod(value, &end) : -1;
            bad = value == NULL || *end != '\0';
        } else if (strcmp(key, "epoch") == 0 || strcmp(key, "next_generation") == 0) {
            uint64_t v;
            bad = parse_u64(next_word(&rest), &v) || v > UINT32_MAX;
            if (key[0] == 'e')
                st->epoch = (uint32_t)v;
            else
                st->next_generation = (uint32_t)v;
        } else if (strcmp(key, "gpu") == 0) {
            bad = parse_gpu_line(rest, st, seen_gpu);
        } else if (strcmp(key, "proc") == 0) {
            bad = parse_proc_line(rest, st);
        } else {
            emu_set_err(err, errlen, "line %d: unknown key '%s'", lineno, key);
            rc = -1;
            break;
        }
        if (bad) {
            emu_set_err(err, errlen, "line %d: cannot parse '%s' line (see README.md for the format)", lineno, key);
            rc = -1;
            break;
        }
    }
    free(copy);
    if (rc)
        return rc;
    if (!have_format || st->num_gpus == 0) {
        emu_set_err(err, errlen, "missing 'format 1' or 'gpus N' line");
        return -1;
    }
    for (int g = 0; g < st->num_gpus; g++) {
        if (!seen_gpu[g]) {
            emu_set_err(err, errlen, "missing line 'gpu %d mode ... generation ...'", g);
            return -1;
        }
    }
    return emu_state_validate(st, err, errlen);
}

char *emu_state_format(const emu_state *st)
{
    size_t cap = 4096 + (size_t)st->num_procs * (EMU_PROC_NAME_MAX + 160);
    char *out = malloc(cap), caps[64];
    if (out == NULL)
        return NULL;
    size_t n = 0;
#define EMIT(...) n += (size_t)snprintf(out + n, cap - n, __VA_ARGS__)
    emu_format_caps(st->nps_caps, caps, sizeof caps);
    EMIT("# mipart MI300X emulator state; format in hack/amdsmi-emulator/README.md.\n");
    EMIT("# Change it with amdsmi-emu or the amdsmi API; hand edits are fine while nothing runs.\n");
    EMIT("format 1\n");
    EMIT("gpus %d\n", st->num_gpus);
    EMIT("nps_caps %s\n", caps);
    EMIT("memory_mode %s\n", emu_nps_name(st->memory_mode));
    EMIT("pending_memory_mode %s\n", st->pending_memory_mode ? emu_nps_name(st->pending_memory_mode) : "none");
    EMIT("reload_delay_s %g\n", st->reload_delay_s);
    EMIT("epoch %u\n", st->epoch);
    EMIT("next_generation %u\n", st->next_generation);
    for (int g = 0; g < st->num_gpus; g++)
        EMIT("gpu %d mode %s generation %u\n", g, emu_mode_name(st->gpus[g].mode), st->gpus[g].generation);
    for (int i = 0; i < st->num_procs; i++) {
        const emu_proc *p = &st->procs[i];
        EMIT("proc pid %u gpu %d partition %d vram %llu busy %d started %lld name %s\n", p->pid, p->gpu,
             p->partition, (unsigned long long)p->vram_bytes, p->busy_pct, (long long)p->started, p->name);
    }
#undef EMIT
    return out;
}
