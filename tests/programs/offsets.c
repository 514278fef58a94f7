/* Prints offsetof(struct user, u_debugreg[n]) for DR0-DR3, DR6, DR7: the
   PTRACE_PEEKUSER / PTRACE_POKEUSER offsets, as the C compiler lays out
   <sys/user.h>. */
#include <stddef.h>
#include <stdio.h>
#include <sys/user.h>

int main(void)
{
    static const int regs[] = {0, 1, 2, 3, 6, 7};
    for (unsigned i = 0; i < sizeof regs / sizeof regs[0]; i++)
        printf("%zu\n", offsetof(struct user, u_debugreg) + regs[i] * sizeof(unsigned long long));
    return 0;
}
