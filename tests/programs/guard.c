/* Touches a page-aligned buffer: reads byte OFF, then writes byte OFF+8;
   prints the buffer's address and the addresses it touches. */
#include <stdio.h>
#include <stdlib.h>

static unsigned char page[4096] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
    int off = argc > 1 ? atoi(argv[1]) : 100;
    volatile unsigned char *p = page;
    printf("page-address %p\n", (void *)page);
    printf("read-address %p\n", (void *)(page + off));
    unsigned char r = p[off];
    printf("write-address %p\n", (void *)(page + off + 8));
    p[off + 8] = (unsigned char)(r + 42);
    printf("value %u\n", page[off + 8]);
    return 0;
}
