/* Calls bump() N times (a software breakpoint target), writes the global
   `counter` and a byte of the page-aligned `page` on every call (hardware
   and memory breakpoint targets), pausing P ms between calls. Prints bump's
   address first, and at the end the call count and checksums that are only
   right if every call ran correctly: after a debugger left, bytes, debug
   registers and protections must all be back. With a third argument
   "wait" it reads a line from stdin before the loop (so a debugger can
   attach first, whatever the machine's load). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile unsigned int counter;
static unsigned char page[4096] __attribute__((aligned(4096)));

__attribute__((noinline)) unsigned long bump(unsigned long x)
{
    return x * 31 + 7;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    int pause_ms = argc > 2 ? atoi(argv[2]) : 0;
    int wait_for_go = argc > 3 && strcmp(argv[3], "wait") == 0;
    unsigned long sum = 1, bytes = 0;
    printf("bump-address %p\n", (void *)bump);
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    if (wait_for_go) {                 /* a debugger attaches first, then says go */
        char line[16];
        if (!fgets(line, sizeof line, stdin))
            return 2;
    }
    for (int i = 0; i < n; i++) {
        sum = bump(sum) % 1000003;
        counter = counter + 1;
        ((volatile unsigned char *)page)[(i * 67) % 4096] = (unsigned char)(i + 1);
        if (pause_ms)
            usleep(pause_ms * 1000);
    }
    for (int i = 0; i < 4096; i++)
        bytes += page[i];
    printf("calls %d\n", n);
    printf("counter %u\n", counter);
    printf("checksum %lu %lu\n", sum, bytes);
    return 0;
}
