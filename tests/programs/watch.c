/* Writes the global `counter` N times; prints its address and each value
   written, so a hardware write watchpoint can be checked against it. */
#include <stdio.h>
#include <stdlib.h>

volatile unsigned int counter = 7;

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    printf("counter-address %p\n", (void *)&counter);
    printf("counter-initial %u\n", counter);
    for (int i = 0; i < n; i++) {
        unsigned int value = counter * 3 + (unsigned int)i;
        counter = value;
        printf("write %d %u\n", i, value);
    }
    return 0;
}
