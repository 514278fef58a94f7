/* Keeps creating short-lived threads: two at a time, each adding its number
   to `total` under a lock, for N rounds, pausing P us between rounds. A
   debugger attaching meanwhile sees threads come and go between its listing
   of /proc/PID/task and its PTRACE_SEIZE calls. Prints its pid first, and at
   the end the number of threads and the total, which are only right if
   every thread ran to completion. With N = 0 it runs until stdin is closed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile unsigned long total;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static volatile int stop;

static void *reader(void *arg)
{
    char c;
    (void)arg;
    while (read(0, &c, 1) > 0)
        ;
    stop = 1;                 /* stdin closed: finish the round and report */
    return NULL;
}

static void *worker(void *arg)
{
    pthread_mutex_lock(&lock);
    total += (unsigned long)arg;
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    int pause_us = argc > 2 ? atoi(argv[2]) : 100;
    unsigned long created = 0;
    pthread_t watcher;
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    if (rounds == 0)
        pthread_create(&watcher, NULL, reader, NULL);
    for (int i = 0; rounds == 0 ? !stop : i < rounds; i++) {
        pthread_t a, b;
        pthread_create(&a, NULL, worker, (void *)(unsigned long)(2 * i + 1));
        pthread_create(&b, NULL, worker, (void *)(unsigned long)(2 * i + 2));
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        created += 2;
        if (pause_us)
            usleep(pause_us);
    }
    printf("threads %lu\n", created);
    printf("total %lu\n", total);
    return 0;
}
