/* The monotonic clock the selection kernels read, in seconds. On Linux this
 * is the clock behind Python's time.monotonic(), so values from either side
 * can be compared. */
#ifndef FASTRPC_CLOCK_H
#define FASTRPC_CLOCK_H

#include <time.h>

static inline double frpc_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
