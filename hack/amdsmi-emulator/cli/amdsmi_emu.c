/*
 * amdsmi-emu: look at and steer the emulated MI300X node (the state file the emulated
 * libamd_smi reads). It links the same state code as the library, so both agree on the format
 * and take the same lock. Exit status: 0 done, 1 refused or failed, 2 bad command line.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amdsmi_abi.h"
#include "emu_state.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

static const char *usage_text =
    "usage: amdsmi-emu [--state PATH] COMMAND [OPTIONS]\n"
    "\n"
    "Steer the emulated 8 x MI300X node that hack/amdsmi-emulator's libamd_smi.so serves.\n"
    "State file: --state PATH, else $" EMU_STATE_ENV ", else /tmp/mipart-amdsmi-emu-<uid>.state\n"
    "(created with 8 GPUs, SPX, NPS1 when absent).\n"
    "\n"
    "commands:\n"
    "  show                         print modes, partitions, VRAM and fake processes\n"
    "  path                         print the state file path\n"
    "  ps add --gpu N [--partition P] --pid PID --name NAME --vram SIZE [--busy PCT]\n"
    "                               put a fake process on a partition (SIZE: bytes or 512M, 10G,\n"
    "                               10GiB, 1.5T; binary units). It blocks mode changes and reloads.\n"
    "  ps rm --pid PID | --all      remove a fake process (every partition it is on), or all\n"
    "  reboot                       emulated reboot: every GPU SPX, NPS1, nothing pending, no processes\n"
    "  set-reload-delay SECONDS     how long amdsmi_gpu_driver_reload() takes (hardware: up to 140)\n"
    "  reset [--gpus N] [--caps LIST] [--reload-delay SECONDS]\n"
    "                               start over: N GPUs (1-8, default 8), memory partition caps\n"
    "                               (default NPS1,NPS4; NPS1,NPS2,NPS4 adds DPX+NPS2)\n"
    "  help                         this text\n";

/* Prints "amdsmi-emu: <message>" on stderr and returns `status`, the exit status to leave with
 * (EXIT_REFUSED or EXIT_USAGE); a usage error also points at --help. */
static int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("amdsmi-emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(status == EXIT_USAGE ? "\nTry 'amdsmi-emu --help'.\n" : "\n", stderr);
    va_end(ap);
    return status;
}

/* --- options: "--key value" or "--key=value"; flags have no value --- */

typedef struct {
    const char *name;
    int is_flag;
    const char *value; /* NULL if absent; "" for a given flag */
} opt;

static int parse_opts(int argc, char **argv, opt *opts, int nopts)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return fail(EXIT_USAGE, "unexpected argument '%s'", arg);
        const char *eq = strchr(arg, '=');
        size_t keylen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == keylen && strncmp(opts[k].name, arg + 2, keylen) == 0)
                o = &opts[k];
        if (o == NULL)
            return fail(EXIT_USAGE, "unknown option '%.*s'", (int)keylen + 2, arg);
        if (o->value != NULL)
            return fail(EXIT_USAGE, "option --%s given twice", o->name);
        if (o->is_flag) {
            if (eq)
                return fail(EXIT_USAGE, "option --%s takes no value", o->name);
            o->value = "";
        } else if (eq) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            return fail(EXIT_USAGE, "option --%s needs a value", o->name);
        }
    }
    return 0;
}

static int parse_uint(const char *text, unsigned long long max, unsigned long long *out)
{
    if (text == NULL || *text < '0' || *text > '9')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *text, double *out)
{
    char *end = NULL;
    if (text == NULL || *text == '\0')
        return -1;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !isfinite(v) || v < 0 || v > 3600)
        return -1;
    *out = v;
    return 0;
}

/* --- transactions --- */

typedef int (*mutate_fn)(emu_state *st, void *arg);

static int with_state(mutate_fn mutate, void *arg)
{
    emu_state *st = malloc(sizeof *st);
    if (st == NULL)
        return fail(EXIT_REFUSED, "out of memory");
    emu_txn txn;
    char err[512];
    int rc = 0;
    if (emu_txn_begin(&txn, st, err, sizeof err)) {
        free(st);
        return fail(EXIT_REFUSED, "%s", err);
    }
    rc = mutate(st, arg);
    if (rc == 0 && emu_txn_commit(&txn, st, err, sizeof err))
        rc = fail(EXIT_REFUSED, "%s", err);
    emu_txn_end(&txn);
    free(st);
    return rc;
}

/* --- show --- */

static int cmd_show(void)
{
    emu_state *st = malloc(sizeof *st);
    char err[512], caps[64];
    if (st == NULL)
        return fail(EXIT_REFUSED, "out of memory");
    if (emu_state_load(st, err, sizeof err)) {
        free(st);
        return fail(EXIT_REFUSED, "%s", err);
    }
    emu_format_caps(st->nps_caps, caps, sizeof caps);
    printf("state file:   %s\n", emu_state_path());
    printf("memory mode:  %s (pending: %s, caps: %s)\n", emu_nps_name(st->memory_mode),
           st->pending_memory_mode ? emu_nps_name(st->pending_memory_mode) : "none", caps);
    printf("reload delay: %g s\n\n", st->reload_delay_s);
    printf("GPU  BUS  MODE  PARTITIONS  CUS/PART  VRAM/PART   USED PER PARTITION (MiB)\n");
    for (int g = 0; g < st->num_gpus; g++) {
        int mode = st->gpus[g].mode, n = emu_mode_partitions(mode);
        printf("%-4d %02x   %-5s %-11d %-9u %6u MiB  ", g, emu_gpu_bus(g), emu_mode_name(mode), n,
               emu_partition_cus(mode), emu_partition_vram_mib(mode));
        for (int p = 0; p < n; p++)
            printf("%s%llu", p ? " " : "", (unsigned long long)(emu_partition_vram_used(st, g, p) / EMU_MIB));
        printf("\n");
    }
    printf("\nprocesses: %d\n", st->num_procs);
    if (st->num_procs) {
        printf("  %-8s %-4s %-5s %-12s %-5s %s\n", "PID", "GPU", "PART", "VRAM", "BUSY", "NAME");
        for (int i = 0; i < st->num_procs; i++) {
            const emu_proc *p = &st->procs[i];
            char vram[32];
            snprintf(vram, sizeof vram, "%llu MiB", (unsigned long long)(p->vram_bytes / EMU_MIB));
            printf("  %-8u %-4d %-5d %-12s %3d%%  %s\n", p->pid, p->gpu, p->partition, vram, p->busy_pct, p->name);
        }
    }
    free(st);
    return 0;
}

/* --- ps --- */

typedef struct {
    emu_proc proc;
} ps_add_arg;

static int do_ps_add(emu_state *st, void *arg)
{
    const emu_proc *np = &((ps_add_arg *)arg)->proc;
    if (np->gpu >= st->num_gpus)
        return fail(EXIT_REFUSED, "--gpu %d: this node has GPUs 0-%d", np->gpu, st->num_gpus - 1);
    int parts = emu_gpu_partitions(st, np->gpu);
    if (np->partition >= parts)
        return fail(EXIT_REFUSED, "--partition %d: GPU %d is in %s and has partitions 0-%d", np->partition,
                    np->gpu, emu_mode_name(st->gpus[np->gpu].mode), parts - 1);
    for (int i = 0; i < st->num_procs; i++) {
        const emu_proc *p = &st->procs[i];
        if (p->pid == np->pid && p->gpu == np->gpu && p->partition == np->partition)
            return fail(EXIT_REFUSED, "pid %u is already on GPU %d partition %d", np->pid, np->gpu,
                        np->partition);
    }
    if (st->num_procs >= EMU_MAX_PROCS)
        return fail(EXIT_REFUSED, "too many fake processes (at most %d)", EMU_MAX_PROCS);
    /* KFD refuses allocations beyond the partition's share (-ENOMEM): so does the emulator. */
    uint64_t used = emu_partition_vram_used(st, np->gpu, np->partition);
    uint64_t total = emu_partition_vram_bytes(st->gpus[np->gpu].mode);
    if (np->vram_bytes > total - used)
        return fail(EXIT_REFUSED, "--vram %llu MiB does not fit: GPU %d partition %d has %llu of %llu MiB free",
                    (unsigned long long)(np->vram_bytes / EMU_MIB), np->gpu, np->partition,
                    (unsigned long long)((total - used) / EMU_MIB), (unsigned long long)(total / EMU_MIB));
    st->procs[st->num_procs++] = *np;
    return 0;
}

typedef struct {
    int all;
    uint32_t pid;
} ps_rm_arg;

static int do_ps_rm(emu_state *st, void *arg)
{
    const ps_rm_arg *a = arg;
    int kept = 0, removed = 0;
    for (int i = 0; i < st->num_procs; i++) {
        if (a->all || st->procs[i].pid == a->pid)
            removed++;
        else
            st->procs[kept++] = st->procs[i];
    }
    st->num_procs = kept;
    if (!a->all && removed == 0)
        return fail(EXIT_REFUSED, "no fake process with pid %u", a->pid);
    return 0;
}

static int cmd_ps(int argc, char **argv)
{
    if (argc < 1)
        return fail(EXIT_USAGE, "ps needs a subcommand: add or rm");
    if (strcmp(argv[0], "add") == 0) {
        opt o[] = {{"gpu", 0, NULL},  {"partition", 0, NULL}, {"pid", 0, NULL},
                   {"name", 0, NULL}, {"vram", 0, NULL},      {"busy", 0, NULL}};
        int rc = parse_opts(argc - 1, argv + 1, o, 6);
        if (rc)
            return rc;
        ps_add_arg a;
        memset(&a, 0, sizeof a);
        unsigned long long v;
        if (o[0].value == NULL || parse_uint(o[0].value, EMU_MAX_GPUS - 1, &v))
            return fail(EXIT_USAGE, "ps add needs --gpu N with N in 0-%d", EMU_MAX_GPUS - 1);
        a.proc.gpu = (int)v;
        v = 0;
        if (o[1].value != NULL && parse_uint(o[1].value, EMU_MAX_PARTITIONS - 1, &v))
            return fail(EXIT_USAGE, "--partition must be 0-%d, got '%s'", EMU_MAX_PARTITIONS - 1, o[1].value);
        a.proc.partition = (int)v;
        if (o[2].value == NULL || parse_uint(o[2].value, UINT32_MAX, &v) || v == 0)
            return fail(EXIT_USAGE, "ps add needs --pid PID with PID a positive integer");
        a.proc.pid = (uint32_t)v;
        const char *name = o[3].value;
        if (name == NULL || name[0] == '\0' || name[0] == ' ' || name[strlen(name) - 1] == ' ' ||
            strpbrk(name, "\n\r\t") || strlen(name) >= EMU_PROC_NAME_MAX)
            return fail(EXIT_USAGE, "ps add needs --name NAME (1-%d characters, no tabs or newlines, "
                        "no leading or trailing spaces)", EMU_PROC_NAME_MAX - 1);
        snprintf(a.proc.name, sizeof a.proc.name, "%s", name);
        if (o[4].value == NULL || emu_parse_size(o[4].value, &a.proc.vram_bytes))
            return fail(EXIT_USAGE, "ps add needs --vram SIZE: bytes or a number with K, M, G or T "
                        "(binary units), e.g. 10G; got '%s'", o[4].value ? o[4].value : "");
        v = 0;
        if (o[5].value != NULL && parse_uint(o[5].value, 100, &v))
            return fail(EXIT_USAGE, "--busy must be a percentage 0-100, got '%s'", o[5].value);
        a.proc.busy_pct = (int)v;
        a.proc.started = (int64_t)time(NULL);
        return with_state(do_ps_add, &a);
    }
    if (strcmp(argv[0], "rm") == 0) {
        opt o[] = {{"pid", 0, NULL}, {"all", 1, NULL}};
        int rc = parse_opts(argc - 1, argv + 1, o, 2);
        if (rc)
            return rc;
        ps_rm_arg a = {o[1].value != NULL, 0};
        unsigned long long v;
        if (a.all == (o[0].value != NULL))
            return fail(EXIT_USAGE, "ps rm needs exactly one of --pid PID or --all");
        if (!a.all) {
            if (parse_uint(o[0].value, UINT32_MAX, &v) || v == 0)
                return fail(EXIT_USAGE, "--pid must be a positive integer, got '%s'", o[0].value);
            a.pid = (uint32_t)v;
        }
        return with_state(do_ps_rm, &a);
    }
    return fail(EXIT_USAGE, "unknown ps subcommand '%s' (add, rm)", argv[0]);
}

/* --- node-wide commands --- */

static int do_reboot(emu_state *st, void *arg)
{
    (void)arg;
    /* Power cycle: the driver loads in its defaults (SPX, NPS1), processes are gone. */
    emu_state fresh;
    emu_state_init_default(&fresh, st->num_gpus, st->nps_caps, st);
    *st = fresh;
    return 0;
}

typedef struct {
    int gpus;
    uint32_t caps;
    int have_delay;
    double delay;
} reset_arg;

static int do_reset(emu_state *st, void *arg)
{
    const reset_arg *a = arg;
    emu_state fresh;
    emu_state_init_default(&fresh, a->gpus, a->caps, st);
    fresh.reload_delay_s = a->have_delay ? a->delay : EMU_DEFAULT_RELOAD_DELAY_S;
    *st = fresh;
    return 0;
}

static int do_set_delay(emu_state *st, void *arg)
{
    st->reload_delay_s = *(double *)arg;
    return 0;
}

static int cmd_reset(int argc, char **argv)
{
    opt o[] = {{"gpus", 0, NULL}, {"caps", 0, NULL}, {"reload-delay", 0, NULL}};
    int rc = parse_opts(argc, argv, o, 3);
    if (rc)
        return rc;
    reset_arg a = {EMU_MAX_GPUS, AMDSMI_NPS1_CAP | AMDSMI_NPS4_CAP, 0, 0};
    unsigned long long v;
    if (o[0].value != NULL) {
        if (parse_uint(o[0].value, EMU_MAX_GPUS, &v) || v == 0)
            return fail(EXIT_USAGE, "--gpus must be 1-%d, got '%s'", EMU_MAX_GPUS, o[0].value);
        a.gpus = (int)v;
    }
    char err[256];
    if (o[1].value != NULL && emu_parse_caps(o[1].value, &a.caps, err, sizeof err))
        return fail(EXIT_USAGE, "--caps: %s", err);
    if (o[2].value != NULL) {
        if (parse_seconds(o[2].value, &a.delay))
            return fail(EXIT_USAGE, "--reload-delay must be seconds 0-3600, got '%s'", o[2].value);
        a.have_delay = 1;
    }
    return with_state(do_reset, &a);
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i < argc && strncmp(argv[i], "--state", 7) == 0) {
        const char *path = NULL;
        if (argv[i][7] == '=')
            path = argv[i] + 8;
        else if (argv[i][7] == '\0' && i + 1 < argc)
            path = argv[++i];
        if (path == NULL || *path == '\0')
            return fail(EXIT_USAGE, "--state needs a path");
        setenv(EMU_STATE_ENV, path, 1);
        i++;
    }
    if (i >= argc)
        return fail(EXIT_USAGE, "missing command");
    const char *cmd = argv[i++];
    int rest = argc - i;
    char **args = argv + i;
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    for (int k = 0; k < rest; k++) {
        if (strcmp(args[k], "--help") == 0 || strcmp(args[k], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
    }
    if (strcmp(cmd, "show") == 0)
        return rest ? fail(EXIT_USAGE, "show takes no arguments") : cmd_show();
    if (strcmp(cmd, "path") == 0) {
        if (rest)
            return fail(EXIT_USAGE, "path takes no arguments");
        printf("%s\n", emu_state_path());
        return 0;
    }
    if (strcmp(cmd, "ps") == 0)
        return cmd_ps(rest, args);
    if (strcmp(cmd, "reboot") == 0)
        return rest ? fail(EXIT_USAGE, "reboot takes no arguments") : with_state(do_reboot, NULL);
    if (strcmp(cmd, "set-reload-delay") == 0) {
        double delay;
        if (rest != 1 || parse_seconds(args[0], &delay))
            return fail(EXIT_USAGE, "set-reload-delay needs one argument: seconds 0-3600");
        return with_state(do_set_delay, &delay);
    }
    if (strcmp(cmd, "reset") == 0)
        return cmd_reset(rest, args);
    return fail(EXIT_USAGE, "unknown command '%s'", cmd);
}
