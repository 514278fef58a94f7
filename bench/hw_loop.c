/* The floor for a hardware watchpoint hit through ptrace (bench/breakpoints.py):
   a child writes `target` N times; the parent arms DR0/DR7 with POKEUSER and,
   per hit, does waitpid, GETREGS, PEEKDATA, PEEKUSER(DR6), POKEUSER(DR6), CONT. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long target;

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000, status, hits = 0;
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        for (int i = 0; i < n; i++)
            target = i;
        _exit(0);
    }
    waitpid(pid, &status, 0);
    long dr = offsetof(struct user, u_debugreg);
    ptrace(PTRACE_POKEUSER, pid, (void *)dr, (void *)&target);
    ptrace(PTRACE_POKEUSER, pid, (void *)(dr + 7 * 8), (void *)(1L | 1L << 16 | 2L << 18));
    ptrace(PTRACE_CONT, pid, 0, 0);
    for (;;) {
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) || WIFSIGNALED(status))
            break;
        struct user_regs_struct regs;
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        (void)ptrace(PTRACE_PEEKDATA, pid, (void *)&target, 0);
        (void)ptrace(PTRACE_PEEKUSER, pid, (void *)(dr + 6 * 8), 0);
        ptrace(PTRACE_POKEUSER, pid, (void *)(dr + 6 * 8), (void *)0xffff0ff0L);
        ptrace(PTRACE_CONT, pid, 0, 0);
        hits++;
    }
    printf("%d hits\n", hits);
    return hits == n ? 0 : 1;
}
