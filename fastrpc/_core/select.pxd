# cython: language_level=3
# The compiled contract of fastrpc/_select.py (Cython pure-Python mode): the
# same source runs uncompiled as the reference implementation.
cimport cython

cdef extern from "fastrpc_clock.h":
    double frpc_monotonic() nogil


cdef class EndpointTable:
    cdef readonly Py_ssize_t n
    cdef readonly double[::1] weight        # effective weight (slow start applied), > 0
    cdef readonly long long[::1] inflight   # calls this balancer has in flight, per endpoint
    cdef readonly long long[::1] reported   # in-flight count the server last reported, -1 unknown
    cdef readonly double[::1] ewma          # peak-EWMA latency in seconds, 0 before any sample
    cdef readonly double[::1] stamp         # monotonic time of the last EWMA update
    cdef readonly unsigned char[::1] mask   # 1 where the endpoint may be picked
    cdef readonly int[::1] eligible         # indices whose mask is 1, ascending
    cdef readonly Py_ssize_t n_eligible
    cdef readonly long long total_inflight
    cdef readonly double tau                # EWMA decay time constant, seconds
    cdef unsigned long long rng             # xorshift64* state, never 0
    # least-load tournament tree, kept only when a strategy asks for it
    cdef readonly bint tracking
    cdef Py_ssize_t tree_size               # leaves: a power of two >= n
    cdef int[::1] tree                      # node -> winning endpoint index, -1 none
    cdef double[::1] tiebreak               # random per endpoint, redrawn on each update

    cpdef unsigned long long next_random(self)
    cpdef Py_ssize_t rand_below(self, Py_ssize_t bound)
    cdef double next_unit(self)
    cpdef double load(self, Py_ssize_t i)
    cpdef int begin(self, Py_ssize_t i) except -1
    cpdef int end(self, Py_ssize_t i, double rtt, double now, long long reported=*) except -1
    cpdef int end_many(self, Py_ssize_t i, Py_ssize_t count, double rtt, double now,
                       long long reported=*) except -1
    cpdef double latency(self, Py_ssize_t i, double now)
    cpdef int set_mask(self, mask) except -1
    cpdef int set_weights(self, weights) except -1
    cpdef int carry_over(self, EndpointTable old, src, dst) except -1
    cpdef int set_reported(self, Py_ssize_t i, long long reported) except -1
    cpdef int track_load(self) except -1
    cpdef double score(self, int i)
    cdef int draw_tiebreak(self, Py_ssize_t i) except -1
    cdef int advance_tiebreak(self, Py_ssize_t i) except -1
    cdef int better(self, int a, int b)
    cdef int update_tree(self, Py_ssize_t i) except -1
    cdef int rebuild_tree(self) except -1


cdef class Kernel:
    cdef readonly EndpointTable table
    cpdef int rebuild(self) except -1
    cdef Py_ssize_t choose(self, unsigned long long key) except -2
    cpdef Py_ssize_t pick(self, unsigned long long key=*) except -2
    cpdef Py_ssize_t pick_many(self, long long[::1] out) except -1


cdef class RandomKernel(Kernel):
    pass


cdef class RoundRobinKernel(Kernel):
    cdef unsigned long long counter


cdef class WeightedRandomKernel(Kernel):
    cdef double[::1] prob                   # alias method: acceptance per column
    cdef int[::1] primary                   # endpoint of each column
    cdef int[::1] alias                     # endpoint taken when the column rejects
    cdef Py_ssize_t columns


cdef class SmoothWeightedKernel(Kernel):
    cdef readonly bint random_phase
    cdef int[::1] members                   # eligible endpoints grouped by weight, index order
    cdef int[::1] group_start
    cdef int[::1] group_pos                 # next member of each group (its candidate)
    cdef double[::1] group_weight
    cdef double[::1] group_current          # nginx "current weight" of the group's candidate
    cdef Py_ssize_t groups
    cdef double total
    cdef int[::1] sequence                  # one full period, when it is small enough
    cdef readonly Py_ssize_t period
    cdef Py_ssize_t position
    cdef Py_ssize_t step(self)


cdef class LeastConnectionsKernel(Kernel):
    pass


cdef class P2CKernel(Kernel):
    cdef Py_ssize_t first, second           # the two candidates two() drew
    cdef Py_ssize_t two(self) except -1


cdef class P2CEwmaKernel(P2CKernel):
    cdef readonly double penalty
    cpdef double cost(self, Py_ssize_t i, double now)


cdef class RingKernel(Kernel):
    cdef unsigned long long[::1] points     # sorted ring positions
    cdef int[::1] owners                    # endpoint owning each position
    cdef readonly Py_ssize_t size
    cdef readonly double load_factor        # bounded-load capacity factor, 0 unbounded
    cdef double eligible_weight             # total weight of the eligible endpoints
    cdef Py_ssize_t locate(self, unsigned long long key)


cdef class GeoKernel(Kernel):
    cdef int[::1] tier_members              # endpoints by tier, nearest first
    cdef int[::1] tier_start                # tier t holds tier_members[tier_start[t]:tier_start[t+1]]
    cdef int[::1] live_members              # the eligible ones among them
    cdef int[::1] live_start
    cdef readonly Py_ssize_t tiers
    cdef readonly double overload           # per unit of weight; a tier whose pick is at or
                                            # above it spills to the next tier
    cdef Py_ssize_t p2c_in(self, Py_ssize_t t)


cpdef unsigned long long xxh64(bytes data, unsigned long long seed=*)
cdef double _now()
cdef unsigned long long _round(unsigned long long acc, unsigned long long lane)
cdef unsigned long long _merge(unsigned long long acc, unsigned long long val)
cdef unsigned long long _rotl(unsigned long long x, int r)
cdef unsigned long long _read64(bytes data, Py_ssize_t p)
cdef unsigned long long _read32(bytes data, Py_ssize_t p)
cpdef unsigned long long mix64(unsigned long long x)
cdef bytes _decimal_text(object key)
cpdef unsigned long long hash_key(object key) except? 0
