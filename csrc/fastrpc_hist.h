/* The latency histogram every fastrpc counter keeps (server handlers, client
 * methods, balancer endpoints): upper bounds in seconds, Prometheus's usual
 * RPC scale made finer at the fast end where inline handlers live, and one
 * more bucket for the rest. Shared so that every histogram adds up. */
#ifndef FASTRPC_HIST_H
#define FASTRPC_HIST_H

#define FRPC_NBUCKETS 17

static const double frpc_bounds[FRPC_NBUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

/* The bucket of a duration: the first bound it does not exceed. */
static inline int frpc_bucket(double seconds) {
    int i = 0;
    while (i < FRPC_NBUCKETS - 1 && seconds > frpc_bounds[i])
        i++;
    return i;
}

#endif
