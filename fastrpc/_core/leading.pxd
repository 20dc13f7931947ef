# The compiled half of the blocking call engine (fastrpc.client.engine): who
# reads the connections while threads wait for their calls.
cimport cython


cdef class Leading:
    """The reading half of a blocking call engine (its base class)."""
    # Whether a thread reads now. Taken and given back only with the GIL
    # held and without a call in between, so the flag is the lock: a
    # thread that sees it clear and sets it is the only one that did.
    cdef readonly bint lead_taken
    cdef public unsigned long leader      # that thread's id, 0: nobody reads
    cdef public list followers            # slots whose threads wait for a leader
    cdef public bint helper_leading       # the helper thread is the leader
    cdef public unsigned long long reads  # read batches processed (the helper watches it)
    cdef public set dirty                 # connections with output not yet written
    cdef public dict conns                # fd -> connection
    cdef public int epoll_fd              # the poll set's epoll descriptor, -1: none (then poller.poll)
    cdef public object poller             # its poll(timeout seconds or None) -> [(fd, events)]
    cdef public int wake_r                # read end of the pipe interrupt() writes to
    cdef public int wake_w                # ... and its write end
    cdef object _local                    # per thread: the lock it sleeps on as a follower
    cdef object _thread_lock(self)
    cdef _flush_dirty(self)
    cdef _follow(self, slot, deadline, lock)
    cdef _promote(self)
    cdef bint _take_lead(self)
    cdef _lead(self, slot, deadline)
    cdef _read_until(self, slot, deadline)
    cdef int _poll_dispatch(self, double timeout) except -1
    cdef int _ready(self, int fd) except -1
    cdef _drain_wakeup(self)


@cython.final
cdef class LeaderToken:
    """A leader's waiter on its own slot: released by another thread, it interrupts the poll."""
    cdef Leading engine                   # whose poll to interrupt
    cdef unsigned long thread             # the leader's thread id
