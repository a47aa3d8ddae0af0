/*
 * thumb_classes.h - sorts Thumb-2 (ARMv7-M, ARMv8.1-M) instructions into the classes the
 * Cortex-M4 Technical Reference Manual gives cycle counts for, and tells Cortex-M55 vector (MVE)
 * instructions from scalar ones.
 *
 * Shared by the QEMU plugin (icount.c) and its checker (classify.c), which `cargo xtask test`
 * runs over every instruction of the built firmware against llvm-objdump's mnemonics.
 *
 * The cycle table is the Cortex-M4 TRM's "Processor instruction set summary" (zero wait states)
 * and its FPU table, with its load/store pipelining notes:
 *   - a load or store directly after a load costs one cycle less (pipelined address phase);
 *   - a store with an immediate offset is one cycle (the write buffer takes the data);
 *   - P, the pipeline refill after a taken branch, is 1 to 3: a parameter here (default 2);
 *   - divides take 2 to 12 cycles depending on the operands: counted at 12.
 * Not modelled: the extra cycle of a load/store whose address comes from the instruction just
 * before it, wait states, bus contention, IT folding. The result is an estimate, labelled so.
 */
#ifndef THUMB_CLASSES_H
#define THUMB_CLASSES_H

#include <stdint.h>

enum thumb_class {
    TC_ALU,      /* data processing, moves, hints, IT: 1 */
    TC_LOAD,     /* LDR/LDRB/LDRH/LDRSB/LDRSH/LDREX/PLD: 2, 1 after a load */
    TC_STORE,    /* STR/STRB/STRH/STREX: 1 with an immediate offset, else 2 (1 after a load) */
    TC_DUAL,     /* LDRD/STRD: 3 */
    TC_MULTI,    /* LDM/STM/PUSH/POP of n registers: 1 + n (+ P when it loads PC) */
    TC_BRANCH,   /* B, BL, BX, BLX, MOV/ADD to PC: 1 + P */
    TC_CBRANCH,  /* B<c>, CBZ/CBNZ, LE (and any branch inside an IT block): 1, + P when taken */
    TC_TABLE,    /* TBB/TBH: 2 + P */
    TC_MUL,      /* MUL/MLA/MLS, long multiplies, SMLAD and the other DSP multiplies: 1 */
    TC_DIV,      /* SDIV/UDIV: 2..12, counted 12 */
    TC_FP,       /* VADD/VSUB/VMUL/VNMUL/VABS/VNEG/VCMP/VCVT/VMOV/VMRS/VMSR: 1 */
    TC_FP_MAC,   /* VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS/VFNMA/VFNMS: 3 */
    TC_FP_DIV,   /* VDIV/VSQRT: 14 */
    TC_FP_LDST,  /* VLDR/VSTR (also of FP system registers): 2 */
    TC_FP_MULTI, /* VLDM/VSTM/VPUSH/VPOP of n words: 1 + n */
    TC_FP_MOV2,  /* VMOV between two core registers and two singles or a double: 2 */
    TC_VECTOR,   /* an M-profile Vector Extension (Helium) instruction */
    TC_COUNT
};

static const char *const thumb_class_names[TC_COUNT] = {
    "alu",   "load",  "store", "dual", "multi",  "branch",  "cbranch", "table",  "mul",
    "div",   "fp",    "fpmac", "fpdiv", "fpldst", "fpmulti", "fpmov2", "vector",
};

struct thumb_insn {
    enum thumb_class cls;
    unsigned n;          /* TC_MULTI: registers; TC_FP_MULTI: words; IT: instructions it covers */
    int writes_pc;       /* TC_MULTI (POP/LDM with PC), TC_LOAD (LDR PC): also a branch */
    int reg_offset;      /* TC_STORE: register offset (not pipelined into by the write buffer) */
    int is_it;           /* the IT instruction */
    unsigned size;       /* 2 or 4 bytes */
};

static unsigned thumb_popcount(unsigned x)
{
    unsigned n = 0;
    for (; x; x &= x - 1) {
        n++;
    }
    return n;
}

static int thumb_is_32bit(uint16_t hw1)
{
    unsigned top = hw1 >> 11;
    return top == 0x1d || top == 0x1e || top == 0x1f;
}

/* The coprocessor / floating-point / vector space: 111x 11xx xxxx xxxx. */
static struct thumb_insn thumb_coproc(uint16_t hw1, uint16_t hw2)
{
    struct thumb_insn d = { TC_FP, 0, 0, 0, 0, 4 };
    unsigned cp = (hw2 >> 8) & 0xf;
    unsigned top = hw1 & 0xff00;

    if (top == 0xef00 || top == 0xff00) {
        d.cls = TC_VECTOR; /* the former Advanced SIMD data-processing space is MVE's */
        return d;
    }
    if (cp == 0xe || cp == 0xf) {
        /* VLDR/VSTR of an FP system register (FPSCR, VPR, P0, FPCXT) sit in the same space. */
        if ((hw1 & 0x0e00) == 0x0c00 && (hw2 & 0x1f80) == 0x0f80) {
            d.cls = TC_FP_LDST;
        } else {
            d.cls = TC_VECTOR;
        }
        return d;
    }
    if ((hw1 & 0x0e00) == 0x0c00) { /* 111x 110x: extension register load/store, 64-bit moves */
        if ((hw1 & 0xffe0) == 0xec40) {
            d.cls = TC_FP_MOV2;
        } else if ((hw1 & 0x0120) == 0x0100) {
            d.cls = TC_FP_LDST;
        } else {
            d.cls = TC_FP_MULTI;
            d.n = hw2 & 0xff; /* words: a double register is two */
        }
        return d;
    }
    /* 111x 1110: data processing and 8/16/32-bit transfers */
    if (hw2 & 0x10) {
        /* cp11 transfers are VMOV to/from a vector lane and VDUP; cp10 is VMOV Sn / VMRS / VMSR */
        d.cls = cp == 0xb ? TC_VECTOR : TC_FP;
        return d;
    }
    if ((hw1 & 0xf000) == 0xf000) {
        return d; /* VSEL, VMAXNM, VRINT{A,N,P,M}, VCVT{A,N,P,M}: 1 */
    }
    unsigned opc = (((hw1 >> 7) & 1) << 2) | ((hw1 >> 4) & 3);
    switch (opc) {
    case 0: /* VMLA/VMLS */
    case 1: /* VNMLA/VNMLS */
    case 5: /* VFNMA/VFNMS */
    case 6: /* VFMA/VFMS */
        d.cls = TC_FP_MAC;
        break;
    case 4: /* VDIV */
        d.cls = TC_FP_DIV;
        break;
    case 7:
        if ((hw1 & 0xf) == 1 && (hw2 & 0xc0) == 0xc0) {
            d.cls = TC_FP_DIV; /* VSQRT */
        }
        break;
    default: /* VMUL/VNMUL, VADD/VSUB */
        break;
    }
    return d;
}

static struct thumb_insn thumb_decode32(uint16_t hw1, uint16_t hw2)
{
    struct thumb_insn d = { TC_ALU, 0, 0, 0, 0, 4 };
    unsigned op1 = (hw1 >> 11) & 3;

    if ((hw1 & 0xec00) == 0xec00) {
        return thumb_coproc(hw1, hw2);
    }
    if (op1 == 1) {
        if ((hw1 & 0xfe40) == 0xe800) { /* LDM/STM */
            d.cls = TC_MULTI;
            d.n = thumb_popcount(hw2);
            d.writes_pc = (hw1 & 0x10) && (hw2 & 0x8000);
        } else if ((hw1 & 0xfe40) == 0xe840) { /* dual, exclusive, table branch */
            int load = (hw1 >> 4) & 1;
            if (hw1 & 0x0120) {
                d.cls = TC_DUAL;
            } else if ((hw1 & 0xfff0) == 0xe8d0 && (hw2 & 0xffe0) == 0xf000) {
                d.cls = TC_TABLE;
            } else if ((hw1 & 0xfff0) == 0xe840 && (hw2 & 0xf000) == 0xf000 &&
                       (hw2 & 0x3f) == 0) {
                d.cls = TC_ALU; /* v8-M TT (test target): no memory access */
            } else {
                d.cls = load ? TC_LOAD : TC_STORE;
                d.reg_offset = 1;
            }
        }
        /* else data processing (shifted register): ALU */
        return d;
    }
    if (op1 == 2) {
        if (!(hw2 & 0x8000)) {
            return d; /* data processing (immediate) */
        }
        if (hw2 & 0x1000) {
            d.cls = TC_BRANCH; /* B.W (T4), BL */
        } else if (!(hw2 & 0x4000)) {
            if ((hw1 & 0x0380) != 0x0380) {
                d.cls = TC_CBRANCH; /* B<c>.W */
            }
            /* else MSR/MRS, hints, barriers: ALU */
        } else if ((hw1 & 0xffc0) == 0xf000 && hw2 == 0xe801) {
            d.cls = TC_VECTOR; /* VCTP */
        } else if ((hw1 & 0xffef) == 0xf00f && (hw2 & 0xf001) == 0xc001) {
            d.cls = TC_CBRANCH; /* LE LR, LETP (v8.1-M loop end: back while LR counts) */
        } else if (hw1 == 0xf02f && (hw2 & 0xf001) == 0xc001) {
            d.cls = TC_BRANCH; /* LE without LR: always back */
        } else if ((hw2 & 0xf001) == 0xc001 && (hw1 & 0xffc0) == 0xf040) {
            d.cls = TC_CBRANCH; /* WLS, WLSTP: branch when the count is zero */
        }
        /* else DLS, DLSTP, BF and friends: ALU */
        return d;
    }
    /* op1 == 3 */
    if ((hw1 & 0xfe00) == 0xf800) { /* load/store single */
        int load = (hw1 >> 4) & 1;
        if (load) {
            d.cls = TC_LOAD;
            d.writes_pc = (hw2 >> 12) == 15 && ((hw1 >> 5) & 3) == 2;
        } else {
            d.cls = TC_STORE;
            d.reg_offset = !(hw1 & 0x80) && (hw2 & 0x0fc0) == 0;
        }
        return d;
    }
    if ((hw1 & 0xff80) == 0xfb00) {
        d.cls = TC_MUL;
    } else if ((hw1 & 0xff80) == 0xfb80) {
        unsigned op = (hw1 >> 4) & 7;
        d.cls = ((op == 1 || op == 3) && (hw2 & 0xf0) == 0xf0) ? TC_DIV : TC_MUL;
    }
    /* else 1111 1010: data processing (register), parallel add/sub, extends: ALU */
    return d;
}

static struct thumb_insn thumb_decode16(uint16_t hw)
{
    struct thumb_insn d = { TC_ALU, 0, 0, 0, 0, 2 };

    if ((hw & 0xfc00) == 0x4400) { /* special data processing, branch and exchange */
        unsigned op = (hw >> 8) & 3;
        unsigned rd = (hw & 7) | ((hw >> 4) & 8);
        if (op == 3 || (op != 1 && rd == 15)) {
            d.cls = TC_BRANCH;
        }
    } else if ((hw & 0xffc0) == 0x4340) {
        d.cls = TC_MUL; /* MULS */
    } else if ((hw & 0xf800) == 0x4800) {
        d.cls = TC_LOAD; /* LDR literal */
    } else if ((hw & 0xf000) == 0x5000) {
        unsigned op = (hw >> 9) & 7;
        d.cls = op <= 2 ? TC_STORE : TC_LOAD;
        d.reg_offset = 1;
    } else if ((hw & 0xe000) == 0x6000 || (hw & 0xe000) == 0x8000) {
        d.cls = (hw & 0x0800) ? TC_LOAD : TC_STORE; /* immediate offset (and SP-relative) */
    } else if ((hw & 0xf000) == 0xb000) {
        if ((hw & 0xf500) == 0xb100) {
            d.cls = TC_CBRANCH; /* CBZ/CBNZ */
        } else if ((hw & 0xfe00) == 0xb400) {
            d.cls = TC_MULTI; /* PUSH */
            d.n = thumb_popcount(hw & 0x1ff);
        } else if ((hw & 0xfe00) == 0xbc00) {
            d.cls = TC_MULTI; /* POP */
            d.n = thumb_popcount(hw & 0x1ff);
            d.writes_pc = (hw >> 8) & 1;
        } else if ((hw & 0xff00) == 0xbf00 && (hw & 0xf)) {
            unsigned mask = hw & 0xf, len = 4;
            while (!(mask & 1)) {
                mask >>= 1;
                len--;
            }
            d.is_it = 1;
            d.n = len;
        }
    } else if ((hw & 0xf000) == 0xc000) {
        d.cls = TC_MULTI; /* STM/LDM */
        d.n = thumb_popcount(hw & 0xff);
    } else if ((hw & 0xf000) == 0xd000) {
        if (((hw >> 8) & 0xf) < 0xe) {
            d.cls = TC_CBRANCH;
        }
        /* else UDF, SVC */
    } else if ((hw & 0xf800) == 0xe000) {
        d.cls = TC_BRANCH;
    }
    return d;
}

/* Decodes one instruction; `hw2` is ignored for a 16-bit one. */
static struct thumb_insn thumb_decode(uint16_t hw1, uint16_t hw2)
{
    return thumb_is_32bit(hw1) ? thumb_decode32(hw1, hw2) : thumb_decode16(hw1);
}

/* A branch-class instruction under an IT condition is a conditional branch. */
static struct thumb_insn thumb_in_it_block(struct thumb_insn d)
{
    if (d.cls == TC_BRANCH || d.writes_pc) {
        d.cls = TC_CBRANCH;
        d.writes_pc = 0;
    }
    return d;
}

/*
 * Cortex-M4 cycles of `d` when it executes, not counting a taken conditional branch's refill
 * (TC_CBRANCH adds `refill` only when taken, which the caller sees at run time).
 * `after_load`: the instruction just before it was a single load.
 */
static unsigned m4_cycles(struct thumb_insn d, int after_load, unsigned refill)
{
    unsigned c;
    switch (d.cls) {
    case TC_LOAD:
        c = after_load ? 1 : 2;
        return d.writes_pc ? c + refill : c;
    case TC_STORE:
        return d.reg_offset && !after_load ? 2 : 1;
    case TC_DUAL:
        return 3;
    case TC_MULTI:
        return 1 + d.n + (d.writes_pc ? refill : 0);
    case TC_BRANCH:
        return 1 + refill;
    case TC_TABLE:
        return 2 + refill;
    case TC_DIV:
        return 12;
    case TC_FP_MAC:
        return 3;
    case TC_FP_DIV:
        return 14;
    case TC_FP_LDST:
    case TC_FP_MOV2:
        return 2;
    case TC_FP_MULTI:
        return 1 + d.n;
    default:
        return 1;
    }
}

#endif
