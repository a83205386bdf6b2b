#include "emu_model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "amdsmi_abi.h"

int emu_mode_partitions(int mode)
{
    switch (mode) {
    case AMDSMI_COMPUTE_PARTITION_SPX: return 1;
    case AMDSMI_COMPUTE_PARTITION_DPX: return 2;
    case AMDSMI_COMPUTE_PARTITION_QPX: return 4;
    case AMDSMI_COMPUTE_PARTITION_CPX: return 8;
    default: return 0; /* TPX: 8 XCDs do not split in 3, the driver never offers it */
    }
}

const char *emu_mode_name(int mode)
{
    switch (mode) {
    case AMDSMI_COMPUTE_PARTITION_SPX: return "SPX";
    case AMDSMI_COMPUTE_PARTITION_DPX: return "DPX";
    case AMDSMI_COMPUTE_PARTITION_TPX: return "TPX";
    case AMDSMI_COMPUTE_PARTITION_QPX: return "QPX";
    case AMDSMI_COMPUTE_PARTITION_CPX: return "CPX";
    default: return "N/A";
    }
}

int emu_mode_parse(const char *name)
{
    static const char *names[] = {"SPX", "DPX", "TPX", "QPX", "CPX"};
    for (int i = 0; i < 5; i++)
        if (strcasecmp(name, names[i]) == 0)
            return i + 1;
    return 0;
}

const char *emu_nps_name(int nps)
{
    switch (nps) {
    case AMDSMI_MEMORY_PARTITION_NPS1: return "NPS1";
    case AMDSMI_MEMORY_PARTITION_NPS2: return "NPS2";
    case AMDSMI_MEMORY_PARTITION_NPS4: return "NPS4";
    case AMDSMI_MEMORY_PARTITION_NPS8: return "NPS8";
    default: return "none";
    }
}

int emu_nps_parse(const char *name)
{
    if (strcasecmp(name, "NPS1") == 0) return AMDSMI_MEMORY_PARTITION_NPS1;
    if (strcasecmp(name, "NPS2") == 0) return AMDSMI_MEMORY_PARTITION_NPS2;
    if (strcasecmp(name, "NPS4") == 0) return AMDSMI_MEMORY_PARTITION_NPS4;
    if (strcasecmp(name, "NPS8") == 0) return AMDSMI_MEMORY_PARTITION_NPS8;
    return 0;
}

uint32_t emu_nps_cap_bit(int nps)
{
    switch (nps) {
    case AMDSMI_MEMORY_PARTITION_NPS1: return AMDSMI_NPS1_CAP;
    case AMDSMI_MEMORY_PARTITION_NPS2: return AMDSMI_NPS2_CAP;
    case AMDSMI_MEMORY_PARTITION_NPS4: return AMDSMI_NPS4_CAP;
    case AMDSMI_MEMORY_PARTITION_NPS8: return AMDSMI_NPS8_CAP;
    default: return 0;
    }
}

uint32_t emu_mode_nps_mask(int mode)
{
    switch (mode) {
    case AMDSMI_COMPUTE_PARTITION_SPX: return AMDSMI_NPS1_CAP;
    case AMDSMI_COMPUTE_PARTITION_DPX: return AMDSMI_NPS1_CAP | AMDSMI_NPS2_CAP;
    case AMDSMI_COMPUTE_PARTITION_QPX: return AMDSMI_NPS1_CAP | AMDSMI_NPS4_CAP;
    case AMDSMI_COMPUTE_PARTITION_CPX: return AMDSMI_NPS1_CAP | AMDSMI_NPS4_CAP;
    default: return 0;
    }
}

int emu_auto_mode(int nps)
{
    switch (nps) {
    case AMDSMI_MEMORY_PARTITION_NPS2: return AMDSMI_COMPUTE_PARTITION_DPX;
    case AMDSMI_MEMORY_PARTITION_NPS4: return AMDSMI_COMPUTE_PARTITION_CPX;
    default: return AMDSMI_COMPUTE_PARTITION_SPX;
    }
}

static const int profile_modes[EMU_NUM_PROFILES] = {
    AMDSMI_COMPUTE_PARTITION_SPX, AMDSMI_COMPUTE_PARTITION_DPX,
    AMDSMI_COMPUTE_PARTITION_QPX, AMDSMI_COMPUTE_PARTITION_CPX,
};

int emu_profile_mode(uint32_t index)
{
    return index < EMU_NUM_PROFILES ? profile_modes[index] : 0;
}

int emu_mode_profile(int mode)
{
    for (int i = 0; i < EMU_NUM_PROFILES; i++)
        if (profile_modes[i] == mode)
            return i;
    return -1;
}

uint8_t emu_gpu_bus(int gpu)
{
    /* PCI buses of the 8 OAMs on a typical MI300X platform, domain 0. */
    static const uint8_t buses[EMU_MAX_GPUS] = {0x05, 0x26, 0x46, 0x65, 0x85, 0xa6, 0xc6, 0xe5};
    return buses[gpu % EMU_MAX_GPUS];
}

uint32_t emu_partition_vram_mib(int mode)
{
    int n = emu_mode_partitions(mode);
    /* KFD gives each XCP mem_partition_size / XCPs_per_mem_partition: 1/n of the device
     * whatever the NPS mode (98296 MiB per DPX partition was observed, ISS-132). */
    return n ? (uint32_t)(EMU_GPU_VRAM_MIB / (uint64_t)n) : 0;
}

uint64_t emu_partition_vram_bytes(int mode)
{
    return (uint64_t)emu_partition_vram_mib(mode) * EMU_MIB;
}

uint32_t emu_partition_xccs(int mode)
{
    int n = emu_mode_partitions(mode);
    return n ? (uint32_t)(EMU_XCDS_PER_GPU / n) : 0;
}

uint32_t emu_partition_cus(int mode)
{
    return emu_partition_xccs(mode) * EMU_CUS_PER_XCD;
}

int emu_parse_size(const char *text, uint64_t *out)
{
    char *end = NULL;
    if (text == NULL || *text == '\0' || *text == '-' || isspace((unsigned char)*text))
        return -1;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || !isfinite(value) || value < 0)
        return -1;
    double mult = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': mult = 1024.0; end++; break;
    case 'M': mult = 1024.0 * 1024; end++; break;
    case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    case 'B': break;
    default: return -1;
    }
    if (mult > 1 && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0')
        return -1;
    double bytes = value * mult;
    if (bytes >= 18446744073709551615.0)
        return -1;
    *out = (uint64_t)bytes;
    return 0;
}
