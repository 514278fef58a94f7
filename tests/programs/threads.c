/* Two threads, one after the other, each write the global `shared` once and
   print their thread id and the value written: hardware breakpoints must
   follow new threads (Linux does not copy debug registers into them). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

volatile unsigned long shared = 5;

static void *worker(void *arg)
{
    unsigned long value = shared * 10 + (unsigned long)arg;
    shared = value;
    printf("thread %d wrote %lu\n", (int)gettid(), value);
    return NULL;
}

int main(void)
{
    printf("shared-address %p\n", (void *)&shared);
    for (unsigned long i = 1; i <= 2; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)i);
        pthread_join(t, NULL);
    }
    printf("final %lu\n", shared);
    return 0;
}
