"""Control transfers the processor checks: far CALL / JMP and INT n through gates.

A far CALL or JMP names a selector. The descriptor it selects decides what
happens (Intel SDM vol. 3A §5.8, vol. 2A "CALL" and "JMP" pseudo-code):

* a code segment: a direct transfer, CPL does not change (§5.8.1, §5.8.2);
* a call gate (16-, 32-bit, or the 16-byte 64-bit gate of IA-32e mode):
  the gate's DPL against CPL and RPL, then its code segment's DPL against
  CPL; a CALL to more privileged nonconforming code switches to the stack
  the current TSS holds for the new CPL (SSn:ESPn, or RSPn), copies the
  gate's parameter count from the old stack, and pushes the caller's SS,
  ESP, CS and EIP (§5.8.3-§5.8.6, Figure 5-13);
* a TSS descriptor or a task gate (not in IA-32e mode: §7.7): a task
  switch (§7.3, :func:`ksinspect.transfer.task_switch.switch_task`).

An INT n, INT3, INTO or a hardware exception goes through the IDT (§6.12):
the vector's gate, the DPL check for software interrupts (§6.12.1.1), the
target code segment, and, to a more privileged level, the stack switch
through the TSS (or the IST in IA-32e mode, §6.14.5) with what is pushed
(Figures 6-4 and 6-9).

Every check is a :class:`ksinspect.access.Step`; the first that fails is
the fault with its error code (§6.13, Figure 6-7: selector index and TI,
IDT=1 when it names an IDT vector, EXT=1 for an event from outside the
program). Where QEMU's TCG decides differently from the SDM (read in its
target/i386/tcg/seg_helper.c), the SDM is followed and the step says so:
QEMU raises #TS, not #SS, for a not-present new stack segment; it does not
check the room on the new stack; a far JMP through a call gate to a
not-present code segment is #GP there, #NP here.
"""
