/* fault_catch.h: a fault caught as a signal, and what the kernel put in its
 * context (faults.c, ldt_access.c): si_signo, si_code, the vector (trapno), the
 * error code and CR2, then a jump back to where the access was tried.
 * Linux x86-64 only (ucontext's REG_TRAPNO, REG_ERR, REG_CR2). */
#ifndef FAULT_CATCH_H
#define FAULT_CATCH_H
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

static sigjmp_buf fault_env;
static volatile long got_signo, got_code, got_trapno, got_err;
static volatile unsigned long got_cr2;

static void on_fault(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = ctx;
    got_signo = sig;
    got_code = info->si_code;
    got_trapno = uc->uc_mcontext.gregs[REG_TRAPNO];
    got_err = uc->uc_mcontext.gregs[REG_ERR];
    got_cr2 = (unsigned long)uc->uc_mcontext.gregs[REG_CR2];
    siglongjmp(fault_env, 1);
}

/* SIGSEGV and SIGBUS go to on_fault; extra_flags adds SA_ONSTACK where the
 * faulting code has no usable stack of its own. */
static void catch_faults(int extra_flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | extra_flags;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

/* Forget the last fault, before the next attempt. */
static void forget_fault(void)
{
    got_signo = got_code = got_trapno = got_err = 0;
    got_cr2 = 0;
}

#endif
