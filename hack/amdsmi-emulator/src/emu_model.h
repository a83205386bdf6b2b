/*
 * MI300X hardware facts the emulator follows (docs/facts-mi300x.md).
 * Pure functions: no state file, no I/O.
 */
#ifndef MIPART_EMU_MODEL_H
#define MIPART_EMU_MODEL_H

#include <stdint.h>

#define EMU_MAX_GPUS 8      /* one xGMI hive of 8 OAMs; the bus table below has 8 entries */
#define EMU_XCDS_PER_GPU 8  /* 8 XCDs (= XCCs), 38 CUs each */
#define EMU_CUS_PER_XCD 38
#define EMU_MAX_PARTITIONS 8

/* 196592 MiB is what amd-smi reports for an SPX MI300X (AMDSMI changelog 7.0.0). */
#define EMU_GPU_VRAM_MIB 196592ull
#define EMU_MIB (1024ull * 1024ull)

/* Compute modes use the amdsmi enum values (SPX=1 ... CPX=5); memory modes too (NPS1=1 ...). */
int emu_mode_partitions(int compute_mode);         /* 1/2/4/8; 0 for TPX or invalid */
const char *emu_mode_name(int compute_mode);       /* "SPX"...; "N/A" for invalid */
int emu_mode_parse(const char *name);              /* 0 if unknown */
const char *emu_nps_name(int nps);                 /* "NPS1"...; "none" for 0 */
int emu_nps_parse(const char *name);               /* 0 if unknown */
uint32_t emu_nps_cap_bit(int nps);                 /* AMDSMI_NPSn_CAP */

/* Memory modes the driver allows with a compute mode (aqua_vanjaram px_mode_info, bare metal):
 * SPX->NPS1; DPX->NPS1|NPS2; QPX->NPS1|NPS4; CPX->NPS1|NPS4. Mask of AMDSMI_NPSn_CAP bits. */
uint32_t emu_mode_nps_mask(int compute_mode);
/* The driver's AUTO compute mode after a reload: NPS1->SPX, NPS2->DPX, NPS4->CPX. */
int emu_auto_mode(int nps);
/* Accelerator profile index <-> compute mode, as seen on MI300X: SPX#0 DPX#1 QPX#2 CPX#3. */
int emu_profile_mode(uint32_t profile_index);     /* 0 if out of range */
int emu_mode_profile(int compute_mode);           /* -1 if none */
#define EMU_NUM_PROFILES 4

uint8_t emu_gpu_bus(int gpu);
uint64_t emu_partition_vram_bytes(int compute_mode);
uint32_t emu_partition_vram_mib(int compute_mode);
uint32_t emu_partition_cus(int compute_mode);
uint32_t emu_partition_xccs(int compute_mode);

/* Size parsing for the CLI: "1234", "10G", "512MiB", "1.5T" (binary multiples). */
int emu_parse_size(const char *text, uint64_t *out);

#endif
