/*
 * icount.c - QEMU TCG plugin (API v1, QEMU 7.x) that counts guest
 * instructions executed between two marker instructions.
 *
 * Markers (Thumb-2 "reserved hint" encodings, executed as NOP by QEMU and
 * by real Cortex-M cores):
 *     start:  hint #0x7a   = .inst.w 0xf3af807a
 *     stop:   hint #0x7b   = .inst.w 0xf3af807b
 * (the hint numbers can be changed with start=N,stop=N).
 *
 * Every executed non-marker instruction is added to a 64-bit counter with
 * an inline (helper-free) add.  A callback on each marker instruction takes
 * a snapshot of the counter; at a stop marker the plugin prints
 *     icount: region=K insns=N [mem=M]
 * where N is the number of instructions executed strictly between the most
 * recent start marker and this stop marker (markers themselves excluded),
 * and M (with mem=on) the number of guest loads+stores among them.
 * Regions are numbered 0,1,2,... in the order their stop markers execute.
 * Regions nest (ViTAE-Edge addition): a start inside an open region opens an
 * inner one, up to MAX_DEPTH deep; each stop closes the innermost open region
 * and its line also gives its nesting depth (0 = outermost): " depth=D".
 *
 * Counting modes:
 *   mode=tb   (default) one inline add of the block's instruction count at
 *             the start of each translation block; the snapshot at a marker
 *             corrects for the instructions of the block that follow it.
 *             Exact unless a block is left early by an exception.
 *   mode=insn one inline add per instruction: exact even across
 *             exceptions, slower.
 *
 * Output goes through qemu_plugin_outs(), i.e. QEMU's log: run QEMU with
 * "-d plugin" (and optionally "-D file") to see it.
 *
 * Build:  gcc -O2 -shared -fPIC -o libicount.so icount.c
 * Use:    qemu-system-arm ... -plugin ./libicount.so,mode=tb,mem=on -d plugin
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api_v1.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;   /* all non-marker insns executed */
static uint64_t mem_count;    /* all guest memory accesses */
#define MAX_DEPTH 16
static uint64_t start_insn[MAX_DEPTH], start_mem[MAX_DEPTH];
static int in_region; /* number of open regions */
static unsigned overflowed;  /* starts ignored because MAX_DEPTH was reached */
static unsigned ignored_open; /* of those, how many still wait for their stop */
static unsigned region_no;
static int per_insn;
static int count_mem;
static unsigned start_imm = 0x7a, stop_imm = 0x7b;

/* returns 1 for start, 2 for stop, 0 otherwise */
static int marker_kind(struct qemu_plugin_insn *insn)
{
    /* At least 4 bytes, not exactly 4: QEMU 7.2 sometimes reports a Cortex-M55 hint as a 6-byte
     * instruction (its bytes then start with the hint's 4), and the marker would be missed. */
    if (qemu_plugin_insn_size(insn) < 4) {
        return 0;
    }
    const uint8_t *b = qemu_plugin_insn_data(insn);
    /* T32 halfwords F3AF 80xx, little-endian in memory: AF F3 xx 80 */
    if (b[0] != 0xaf || b[1] != 0xf3 || b[3] != 0x80) {
        return 0;
    }
    if (b[2] == start_imm) {
        return 1;
    }
    if (b[2] == stop_imm) {
        return 2;
    }
    return 0;
}

/*
 * userdata encodes (not_yet_executed << 2) | kind: not_yet_executed is the
 * number of non-marker instructions of the block after the marker, which
 * mode=tb has already added to insn_count when the marker runs.
 */
static void marker_cb(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index;
    uintptr_t u = (uintptr_t)udata;
    int kind = (int)(u & 3);
    uint64_t now = insn_count - (uint64_t)(u >> 2);

    if (kind == 1) {
        if (in_region == MAX_DEPTH) {
            overflowed++;
            ignored_open++;
            return;
        }
        start_insn[in_region] = now;
        start_mem[in_region] = mem_count;
        in_region++;
    } else if (ignored_open) {
        ignored_open--; /* the stop of a start that was ignored */
    } else if (in_region) {
        char buf[160];
        int d = --in_region;
        if (count_mem) {
            snprintf(buf, sizeof(buf), "icount: region=%u insns=%" PRIu64
                     " mem=%" PRIu64 " depth=%d\n", region_no, now - start_insn[d],
                     mem_count - start_mem[d], d);
        } else {
            snprintf(buf, sizeof(buf), "icount: region=%u insns=%" PRIu64
                     " depth=%d\n", region_no, now - start_insn[d], d);
        }
        qemu_plugin_outs(buf);
        region_no++;
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    int kinds[n ? n : 1];
    size_t plain = 0;

    for (size_t i = 0; i < n; i++) {
        kinds[i] = marker_kind(qemu_plugin_tb_get_insn(tb, i));
        if (!kinds[i]) {
            plain++;
        }
    }
    if (!per_insn && plain) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &insn_count, plain);
    }
    size_t after = plain; /* non-marker insns at index >= i */
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (kinds[i]) {
            uintptr_t u = ((per_insn ? 0 : after) << 2) | (uintptr_t)kinds[i];
            qemu_plugin_register_vcpu_insn_exec_cb(insn, marker_cb,
                                                   QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)u);
            continue;
        }
        after--;
        if (per_insn) {
            qemu_plugin_register_vcpu_insn_exec_inline(
                insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
        }
        if (count_mem) {
            qemu_plugin_register_vcpu_mem_inline(insn, QEMU_PLUGIN_MEM_RW,
                                                 QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &mem_count, 1);
        }
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    (void)id;
    (void)p;
    char buf[200];
    snprintf(buf, sizeof(buf), "icount: total insns=%" PRIu64 " regions=%u%s%s\n",
             insn_count, region_no, in_region ? " (a region was left open)" : "",
             overflowed ? " (regions nested deeper than 16 were ignored)" : "");
    qemu_plugin_outs(buf);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "mode=tb")) {
            per_insn = 0;
        } else if (!strcmp(a, "mode=insn")) {
            per_insn = 1;
        } else if (!strcmp(a, "mem=on")) {
            count_mem = 1;
        } else if (!strcmp(a, "mem=off")) {
            count_mem = 0;
        } else if (!strncmp(a, "start=", 6)) {
            start_imm = (unsigned)strtoul(a + 6, NULL, 0) & 0xff;
        } else if (!strncmp(a, "stop=", 5)) {
            stop_imm = (unsigned)strtoul(a + 5, NULL, 0) & 0xff;
        } else {
            fprintf(stderr, "icount: unknown argument '%s'\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
