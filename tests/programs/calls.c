/* Calls bump() N times (software breakpoint target); prints bump's address
   and a checksum that is only right if bump() ran correctly every time. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) unsigned long bump(unsigned long x)
{
    return x * 31 + 7;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    int pause_ms = argc > 2 ? atoi(argv[2]) : 0;
    unsigned long sum = 1;
    printf("bump-address %p\n", (void *)bump);
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        sum = bump(sum) % 1000003;
        if (pause_ms)
            usleep(pause_ms * 1000);
    }
    printf("calls %d\n", n);
    printf("checksum %lu\n", sum);
    return 0;
}
