/*
 * classify.c - the plugin's instruction classes for a list of encodings, so they can be checked
 * against a disassembler (`cargo xtask test` does, over every instruction of the firmware).
 *
 * Input, one instruction per line, in program order: its halfwords in hex as llvm-objdump prints
 * them ("f8d0 3004" or "4770"). Output, one line each: the class name, its count n (registers of
 * an LDM/STM, words of a VLDM/VSTM, else 0) and the Cortex-M4 cycles (not after a load; a taken
 * conditional branch's refill not included). An IT instruction makes the next 1..4 lines
 * conditional, as on the core.
 *
 * Build: cc -O2 -o classify classify.c
 */
#include <stdio.h>
#include <stdlib.h>

#include "thumb_classes.h"

int main(void)
{
    char line[256];
    unsigned it_left = 0;
    while (fgets(line, sizeof(line), stdin)) {
        char *end;
        unsigned long hw1 = strtoul(line, &end, 16);
        unsigned long hw2 = strtoul(end, NULL, 16);
        struct thumb_insn d = thumb_decode((uint16_t)hw1, (uint16_t)hw2);
        if (it_left) {
            d = thumb_in_it_block(d);
            it_left--;
        }
        if (d.is_it) {
            it_left = d.n;
        }
        printf("%s %u %u\n", thumb_class_names[d.cls], d.n, m4_cycles(d, 0, 2));
    }
    return 0;
}
