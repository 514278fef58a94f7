/* Prints the layout of the x64 CONTEXT, its XMM_SAVE_AREA32 and the 32-bit
   WOW64_CONTEXT as mingw-w64's winnt.h lays them out: one "STRUCT.MEMBER
   OFFSET SIZE" line per member, then "STRUCT sizeof SIZE ALIGN". The test
   suite compares ksinspect.windows.context's tables with this output. */
#include <stddef.h>
#include <stdio.h>
#include <windows.h>

#define M(s, m) printf("%s.%s %u %u\n", #s, #m, (unsigned)offsetof(s, m), \
                       (unsigned)sizeof(((s *)0)->m))
#define S(s) printf("%s sizeof %u %u\n", #s, (unsigned)sizeof(s), (unsigned)__alignof__(s))

int main(void)
{
    M(CONTEXT, P1Home); M(CONTEXT, P2Home); M(CONTEXT, P3Home); M(CONTEXT, P4Home);
    M(CONTEXT, P5Home); M(CONTEXT, P6Home); M(CONTEXT, ContextFlags); M(CONTEXT, MxCsr);
    M(CONTEXT, SegCs); M(CONTEXT, SegDs); M(CONTEXT, SegEs); M(CONTEXT, SegFs);
    M(CONTEXT, SegGs); M(CONTEXT, SegSs); M(CONTEXT, EFlags);
    M(CONTEXT, Dr0); M(CONTEXT, Dr1); M(CONTEXT, Dr2); M(CONTEXT, Dr3); M(CONTEXT, Dr6);
    M(CONTEXT, Dr7);
    M(CONTEXT, Rax); M(CONTEXT, Rcx); M(CONTEXT, Rdx); M(CONTEXT, Rbx); M(CONTEXT, Rsp);
    M(CONTEXT, Rbp); M(CONTEXT, Rsi); M(CONTEXT, Rdi); M(CONTEXT, R8); M(CONTEXT, R9);
    M(CONTEXT, R10); M(CONTEXT, R11); M(CONTEXT, R12); M(CONTEXT, R13); M(CONTEXT, R14);
    M(CONTEXT, R15); M(CONTEXT, Rip); M(CONTEXT, FltSave);
    M(CONTEXT, Header); M(CONTEXT, Legacy); M(CONTEXT, Xmm0); M(CONTEXT, Xmm15);
    M(CONTEXT, VectorRegister); M(CONTEXT, VectorControl); M(CONTEXT, DebugControl);
    M(CONTEXT, LastBranchToRip); M(CONTEXT, LastBranchFromRip);
    M(CONTEXT, LastExceptionToRip); M(CONTEXT, LastExceptionFromRip);
    S(CONTEXT);

    M(XMM_SAVE_AREA32, ControlWord); M(XMM_SAVE_AREA32, StatusWord);
    M(XMM_SAVE_AREA32, TagWord); M(XMM_SAVE_AREA32, ErrorOpcode);
    M(XMM_SAVE_AREA32, ErrorOffset); M(XMM_SAVE_AREA32, ErrorSelector);
    M(XMM_SAVE_AREA32, DataOffset); M(XMM_SAVE_AREA32, DataSelector);
    M(XMM_SAVE_AREA32, MxCsr); M(XMM_SAVE_AREA32, MxCsr_Mask);
    M(XMM_SAVE_AREA32, FloatRegisters); M(XMM_SAVE_AREA32, XmmRegisters);
    S(XMM_SAVE_AREA32);

    M(WOW64_CONTEXT, ContextFlags); M(WOW64_CONTEXT, Dr0); M(WOW64_CONTEXT, Dr1);
    M(WOW64_CONTEXT, Dr2); M(WOW64_CONTEXT, Dr3); M(WOW64_CONTEXT, Dr6); M(WOW64_CONTEXT, Dr7);
    M(WOW64_CONTEXT, FloatSave); M(WOW64_CONTEXT, SegGs); M(WOW64_CONTEXT, SegFs);
    M(WOW64_CONTEXT, SegEs); M(WOW64_CONTEXT, SegDs); M(WOW64_CONTEXT, Edi);
    M(WOW64_CONTEXT, Esi); M(WOW64_CONTEXT, Ebx); M(WOW64_CONTEXT, Edx); M(WOW64_CONTEXT, Ecx);
    M(WOW64_CONTEXT, Eax); M(WOW64_CONTEXT, Ebp); M(WOW64_CONTEXT, Eip); M(WOW64_CONTEXT, SegCs);
    M(WOW64_CONTEXT, EFlags); M(WOW64_CONTEXT, Esp); M(WOW64_CONTEXT, SegSs);
    M(WOW64_CONTEXT, ExtendedRegisters);
    S(WOW64_CONTEXT);

    M(WOW64_FLOATING_SAVE_AREA, ControlWord); M(WOW64_FLOATING_SAVE_AREA, StatusWord);
    M(WOW64_FLOATING_SAVE_AREA, TagWord); M(WOW64_FLOATING_SAVE_AREA, ErrorOffset);
    M(WOW64_FLOATING_SAVE_AREA, ErrorSelector); M(WOW64_FLOATING_SAVE_AREA, DataOffset);
    M(WOW64_FLOATING_SAVE_AREA, DataSelector); M(WOW64_FLOATING_SAVE_AREA, RegisterArea);
    M(WOW64_FLOATING_SAVE_AREA, Cr0NpxState);
    S(WOW64_FLOATING_SAVE_AREA);
    printf("CONTEXT_ALL %#lx\nCONTEXT_FULL %#lx\nWOW64_CONTEXT_ALL %#lx\n",
           (unsigned long)CONTEXT_ALL, (unsigned long)CONTEXT_FULL, (unsigned long)WOW64_CONTEXT_ALL);
    return 0;
}
