#ifndef FERRY_CHIREDIS_SHIM_H
#define FERRY_CHIREDIS_SHIM_H

/* Debian's hiredis.pc adds -D_FILE_OFFSET_BITS=64 which makes SwiftPM warn on every build,
 * so the module is declared without pkgConfig and includes the header directly. */
#include <hiredis/hiredis.h>
#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/time.h>

/* redisGetReply, keeping the errno of the failed read or write: a blocking socket that hit its
 * SO_RCVTIMEO reports EAGAIN, and that is the only way to tell a timeout from a lost connection. */
static inline int ferry_redis_get_reply(redisContext *c, redisReply **reply, int *saved_errno) {
    errno = 0;
    int rc = redisGetReply(c, (void **)reply);
    *saved_errno = errno;
    return rc;
}

/* The fixed-size errstr array imports into Swift as a 128-element tuple; a pointer is simpler. */
static inline const char *ferry_redis_errstr(const redisContext *c) {
    return c->errstr;
}

static inline struct timeval ferry_timeval_ms(long long milliseconds) {
    struct timeval tv;
    tv.tv_sec = (time_t)(milliseconds / 1000);
    tv.tv_usec = (suseconds_t)((milliseconds % 1000) * 1000);
    return tv;
}

/* hiredis writes with write(2): once Redis has closed the socket, the kernel raises SIGPIPE,
 * whose default action kills the process. Ignore it so the write fails with EPIPE instead,
 * unless the application installed a handler of its own. */
static inline void ferry_ignore_sigpipe_if_default(void) {
    struct sigaction current;
    if (sigaction(SIGPIPE, NULL, &current) == 0 && current.sa_handler == SIG_DFL) {
        signal(SIGPIPE, SIG_IGN);
    }
}

/* Names the calling thread (15 bytes at most), so the thread that blocks in hiredis shows in
 * `top -H` and gdb. prctl is variadic, hence the wrapper. */
static inline void ferry_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* Copies the calling thread's name into `buffer`, which must hold 16 bytes. */
static inline void ferry_get_thread_name(char *buffer) {
    prctl(PR_GET_NAME, buffer, 0, 0, 0);
}

#endif
