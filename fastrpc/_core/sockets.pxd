# The system calls a blocking connection moves its bytes with (declarations
# only: fastrpc._core.calltable receives, fastrpc._core.transport sends).
cdef extern from *:
    """
    #include <errno.h>
    #include <poll.h>
    #include <sys/types.h>
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <string.h>
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0      /* Python ignores SIGPIPE anyway */
    #endif

    /* recv() without waiting: bytes read, 0 at the end of the stream, -1
       with errno set (EAGAIN: nothing had arrived). */
    static Py_ssize_t frpc_recv_now(int fd, char *p, Py_ssize_t n) {
        ssize_t r;
        do {
            r = recv(fd, p, (size_t)n, MSG_DONTWAIT);
        } while (r < 0 && errno == EINTR);
        return (Py_ssize_t)r;
    }

    /* send() without waiting: bytes written, or -1 with errno set. */
    static Py_ssize_t frpc_send_now(int fd, const char *p, Py_ssize_t n) {
        return (Py_ssize_t)send(fd, p, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }

    /* sendmsg() of `n` buffers, waiting for room as long as it takes (the
       caller releases the GIL): bytes written (> 0, possibly fewer than
       asked), or -1 with errno set (EINTR included, so the caller can run
       signal handlers). */
    static Py_ssize_t frpc_sendv_wait(int fd, struct iovec *iov, int n) {
        struct msghdr m;
        struct pollfd w;
        ssize_t r;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = n;
        for (;;) {
            r = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return (Py_ssize_t)r;
            w.fd = fd;
            w.events = POLLOUT;
            w.revents = 0;
            if (poll(&w, 1, -1) < 0)
                return -1;
        }
    }

    /* The same for one buffer. */
    static Py_ssize_t frpc_send_wait(int fd, const char *p, Py_ssize_t n) {
        struct iovec one;
        one.iov_base = (void *)p;
        one.iov_len = (size_t)n;
        return frpc_sendv_wait(fd, &one, 1);
    }
    """
    struct iovec:
        void *iov_base
        size_t iov_len
    int errno
    int EAGAIN
    int EWOULDBLOCK
    int EINTR
    Py_ssize_t frpc_recv_now(int fd, char *p, Py_ssize_t n) nogil
    Py_ssize_t frpc_send_now(int fd, const char *p, Py_ssize_t n) nogil
    Py_ssize_t frpc_send_wait(int fd, const char *p, Py_ssize_t n) nogil
    Py_ssize_t frpc_sendv_wait(int fd, iovec *iov, int n) nogil
