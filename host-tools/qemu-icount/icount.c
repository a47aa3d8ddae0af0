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
 * Timing (ViTAE-Edge addition):
 *   timing=m4   also sum an estimate of Cortex-M4 cycles: each instruction's cycles from the
 *               Cortex-M4 TRM's table by class (thumb_classes.h), plus the pipeline refill P of
 *               every taken conditional branch, seen at run time as the next block not starting
 *               at the branch's fall-through address; refill=N sets P (1..3, default 2).
 *               Lines gain " cycles=C". An estimate, not a measurement: no wait states,
 *               no address-dependency stalls.
 *   timing=m55  also count Cortex-M55 vector (MVE) instructions: lines gain " vector=V"
 *               (scalar instructions = insns - V). Each counts once whatever its beats.
 *   classes=on  with a timing model: at exit, the whole run's instructions (and estimated
 *               cycles) per class, "icount: class=NAME insns=N [cycles=C]" (mode=tb counts;
 *               the taken-branch refills are in the totals only).
 *   blocks=on   at exit, every executed translation block: "icount: block=0xADDR insns=N
 *               cycles=C executions=E" (C: its static cycles with timing=m4, else 0), for a
 *               profile by function (map the addresses with the ELF's symbols).
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
#include "thumb_classes.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;   /* all non-marker insns executed */
static uint64_t mem_count;    /* all guest memory accesses */
#define MAX_DEPTH 16
static uint64_t cycle_count;  /* timing=m4: estimated cycles of those insns */
static uint64_t vector_count; /* timing=m55: vector insns among them */
static uint64_t start_insn[MAX_DEPTH], start_mem[MAX_DEPTH];
static uint64_t start_cycles[MAX_DEPTH], start_vector[MAX_DEPTH];
static int per_class;                 /* classes=on: totals per instruction class at exit */
static int per_block;                 /* blocks=on: executions of every block at exit */

/* blocks=on: one per translation (a block translated twice appears twice). */
struct block_count {
    uint64_t start, executions, insns, cycles;
    struct block_count *next;
};
static struct block_count *block_counts;
static uint64_t class_insns[TC_COUNT], class_cycles[TC_COUNT];
static int in_region; /* number of open regions */
static unsigned overflowed;  /* starts ignored because MAX_DEPTH was reached */
static unsigned ignored_open; /* of those, how many still wait for their stop */
static unsigned region_no;
static int per_insn;
static int count_mem;
static unsigned start_imm = 0x7a, stop_imm = 0x7b;
enum timing { TIMING_NONE, TIMING_M4, TIMING_M55 };
static enum timing timing;
static unsigned refill = 2;

/* What a marker's callback needs: the kind and, in mode=tb, what the block counted after it. */
struct marker {
    int kind;
    uint64_t insns_after, cycles_after, vector_after;
};

/* timing=m4: one per translated block, for the taken-branch refill. */
struct block {
    uint64_t start;
    uint64_t fall_through; /* address after the block's last instruction */
    int ends_in_cond_branch;
};
static const struct block *previous_block;

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

static void marker_cb(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index;
    const struct marker *m = udata;
    uint64_t now = insn_count - m->insns_after;
    uint64_t cycles = cycle_count - m->cycles_after;
    uint64_t vector = vector_count - m->vector_after;

    if (m->kind == 1) {
        if (in_region == MAX_DEPTH) {
            overflowed++;
            ignored_open++;
            return;
        }
        start_insn[in_region] = now;
        start_mem[in_region] = mem_count;
        start_cycles[in_region] = cycles;
        start_vector[in_region] = vector;
        in_region++;
    } else if (ignored_open) {
        ignored_open--; /* the stop of a start that was ignored */
    } else if (in_region) {
        char buf[240];
        int d = --in_region;
        int len = snprintf(buf, sizeof(buf), "icount: region=%u insns=%" PRIu64, region_no,
                           now - start_insn[d]);
        if (count_mem) {
            len += snprintf(buf + len, sizeof(buf) - len, " mem=%" PRIu64,
                            mem_count - start_mem[d]);
        }
        if (timing == TIMING_M4) {
            len += snprintf(buf + len, sizeof(buf) - len, " cycles=%" PRIu64,
                            cycles - start_cycles[d]);
        } else if (timing == TIMING_M55) {
            len += snprintf(buf + len, sizeof(buf) - len, " vector=%" PRIu64,
                            vector - start_vector[d]);
        }
        snprintf(buf + len, sizeof(buf) - len, " depth=%d\n", d);
        qemu_plugin_outs(buf);
        region_no++;
    }
}

/* timing=m4: adds the refill of the previous block's conditional branch when it was taken. */
static void block_cb(unsigned int vcpu_index, void *udata)
{
    (void)vcpu_index;
    const struct block *b = udata;
    if (previous_block && previous_block->ends_in_cond_branch &&
        b->start != previous_block->fall_through) {
        cycle_count += refill;
    }
    previous_block = b;
}

static struct thumb_insn decode_insn(struct qemu_plugin_insn *insn)
{
    const uint8_t *p = qemu_plugin_insn_data(insn);
    size_t size = qemu_plugin_insn_size(insn);
    uint16_t hw1 = (uint16_t)(p[0] | p[1] << 8);
    uint16_t hw2 = size >= 4 ? (uint16_t)(p[2] | p[3] << 8) : 0;
    return thumb_decode(hw1, hw2);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (!n) {
        return;
    }
    int kinds[n];
    uint64_t cycles[n], vector[n];
    uint64_t tb_class_insns[TC_COUNT] = { 0 }, tb_class_cycles[TC_COUNT] = { 0 };
    uint64_t plain = 0, tb_cycles = 0, tb_vector = 0;
    int after_load = 0, cond_at_end = 0;
    unsigned it_left = 0;

    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        kinds[i] = marker_kind(insn);
        cycles[i] = vector[i] = 0;
        if (kinds[i]) {
            after_load = 0;
            continue;
        }
        plain++;
        if (timing == TIMING_NONE) {
            continue;
        }
        struct thumb_insn d = decode_insn(insn);
        if (it_left) {
            d = thumb_in_it_block(d);
            it_left--;
        }
        if (d.is_it) {
            it_left = d.n;
        }
        cycles[i] = m4_cycles(d, after_load, refill);
        vector[i] = d.cls == TC_VECTOR;
        after_load = d.cls == TC_LOAD && !d.writes_pc;
        cond_at_end = i == n - 1 && d.cls == TC_CBRANCH;
        tb_cycles += cycles[i];
        tb_vector += vector[i];
        tb_class_insns[d.cls]++;
        tb_class_cycles[d.cls] += cycles[i];
    }
    for (int c = 0; per_class && c < TC_COUNT; c++) {
        if (tb_class_insns[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &class_insns[c], tb_class_insns[c]);
        }
        if (tb_class_cycles[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &class_cycles[c], tb_class_cycles[c]);
        }
    }
    if (per_block) {
        struct block_count *bc = calloc(1, sizeof(*bc));
        if (bc) {
            bc->start = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, 0));
            bc->insns = plain;
            bc->cycles = tb_cycles;
            bc->next = block_counts;
            block_counts = bc;
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &bc->executions, 1);
        }
    }
    if (timing == TIMING_M4) {
        struct qemu_plugin_insn *first = qemu_plugin_tb_get_insn(tb, 0);
        struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(tb, n - 1);
        struct block *b = malloc(sizeof(*b));
        if (b) {
            b->start = qemu_plugin_insn_vaddr(first);
            b->fall_through = qemu_plugin_insn_vaddr(last) + qemu_plugin_insn_size(last);
            b->ends_in_cond_branch = cond_at_end;
            /* registered before any marker callback on the same instruction: a refill belongs
             * to the branch, which ran before the marker */
            qemu_plugin_register_vcpu_insn_exec_cb(first, block_cb, QEMU_PLUGIN_CB_NO_REGS, b);
        }
    }
    if (!per_insn) {
        if (plain) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &insn_count, plain);
        }
        if (tb_cycles) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &cycle_count, tb_cycles);
        }
        if (tb_vector) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                     &vector_count, tb_vector);
        }
    }
    /* what the block still counts after instruction i (mode=tb adds it all at the start) */
    uint64_t insns_after = plain, cycles_after = tb_cycles, vector_after = tb_vector;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (kinds[i]) {
            struct marker *m = malloc(sizeof(*m));
            if (!m) {
                continue;
            }
            m->kind = kinds[i];
            m->insns_after = per_insn ? 0 : insns_after;
            m->cycles_after = per_insn ? 0 : cycles_after;
            m->vector_after = per_insn ? 0 : vector_after;
            qemu_plugin_register_vcpu_insn_exec_cb(insn, marker_cb, QEMU_PLUGIN_CB_NO_REGS, m);
            continue;
        }
        insns_after--;
        cycles_after -= cycles[i];
        vector_after -= vector[i];
        if (per_insn) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       &insn_count, 1);
            if (cycles[i]) {
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                           &cycle_count, cycles[i]);
            }
            if (vector[i]) {
                qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                           &vector_count, 1);
            }
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
    char buf[260];
    char extra[64] = "";
    if (timing == TIMING_M4) {
        snprintf(extra, sizeof(extra), " cycles=%" PRIu64, cycle_count);
    } else if (timing == TIMING_M55) {
        snprintf(extra, sizeof(extra), " vector=%" PRIu64, vector_count);
    }
    snprintf(buf, sizeof(buf), "icount: total insns=%" PRIu64 "%s regions=%u%s%s\n",
             insn_count, extra, region_no, in_region ? " (a region was left open)" : "",
             overflowed ? " (regions nested deeper than 16 were ignored)" : "");
    qemu_plugin_outs(buf);
    for (const struct block_count *bc = block_counts; bc; bc = bc->next) {
        if (bc->executions) {
            snprintf(buf, sizeof(buf), "icount: block=0x%" PRIx64 " insns=%" PRIu64
                     " cycles=%" PRIu64 " executions=%" PRIu64 "\n",
                     bc->start, bc->insns, bc->cycles, bc->executions);
            qemu_plugin_outs(buf);
        }
    }
    for (int c = 0; per_class && c < TC_COUNT; c++) {
        if (!class_insns[c]) {
            continue;
        }
        if (timing == TIMING_M4) {
            snprintf(buf, sizeof(buf), "icount: class=%s insns=%" PRIu64 " cycles=%" PRIu64 "\n",
                     thumb_class_names[c], class_insns[c], class_cycles[c]);
        } else {
            snprintf(buf, sizeof(buf), "icount: class=%s insns=%" PRIu64 "\n",
                     thumb_class_names[c], class_insns[c]);
        }
        qemu_plugin_outs(buf);
    }
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
        } else if (!strcmp(a, "timing=m4")) {
            timing = TIMING_M4;
        } else if (!strcmp(a, "timing=m55")) {
            timing = TIMING_M55;
        } else if (!strcmp(a, "timing=none")) {
            timing = TIMING_NONE;
        } else if (!strcmp(a, "classes=on")) {
            per_class = 1;
        } else if (!strcmp(a, "blocks=on")) {
            per_block = 1;
        } else if (!strncmp(a, "refill=", 7)) {
            refill = (unsigned)strtoul(a + 7, NULL, 0);
            if (refill < 1 || refill > 3) {
                fprintf(stderr, "icount: refill must be 1, 2 or 3 (the TRM's range), not '%s'\n",
                        a + 7);
                return -1;
            }
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
