// ferry-exec-guard: runs one `ferry worker --exec` handler and makes it die with its worker.
//
// Usage: ferry-exec-guard WORKER_PID PROGRAM [ARGUMENT...]
//
// The worker starts this guard as the leader of a new process group, and the guard runs the
// handler (PROGRAM, normally /bin/sh -c CMD) as its child in that group. When the worker dies,
// even by kill -9, the guard kills the whole group with SIGKILL: the handler and every process
// it started. Without it, a handler outlives its worker and runs on while another worker
// reclaims the same job and runs it too.
//
// The guard learns of the worker's death two ways: PR_SET_PDEATHSIG (at once, but sent when the
// thread that started the guard exits, which may happen while the worker lives), so the signal
// is only a hint to look; and its parent process id, checked at every hint and every 200 ms,
// which is the truth: once it is no longer WORKER_PID, the worker is gone.
//
// The guard otherwise stays out of the way: standard streams, the environment and the process
// group are the handler's, and it exits as the handler did (the same status, or the same signal).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void kill_group_if_orphaned(pid_t worker) {
  if (getppid() != worker) {
    kill(0, SIGKILL);  // the whole group, this guard included
    _exit(137);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ferry-exec-guard WORKER_PID PROGRAM [ARGUMENT...]\n");
    return 2;
  }
  char *end = NULL;
  long parsed = strtol(argv[1], &end, 10);
  if (end == argv[1] || *end != '\0' || parsed <= 1) {
    fprintf(stderr, "ferry-exec-guard: invalid worker pid \"%s\"\n", argv[1]);
    return 2;
  }
  pid_t worker = (pid_t)parsed;
  // Lead a process group of its own (the worker asks for one already): killing "the group"
  // must never reach whoever started the guard.
  setpgid(0, 0);

  sigset_t watched, previous;
  sigemptyset(&watched);
  sigaddset(&watched, SIGCHLD);
  sigaddset(&watched, SIGUSR1);
  sigprocmask(SIG_BLOCK, &watched, &previous);
  prctl(PR_SET_PDEATHSIG, SIGUSR1);
  kill_group_if_orphaned(worker);  // the worker may have died before the line above

  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "ferry-exec-guard: cannot start the handler: %s\n", strerror(errno));
    return 126;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &previous, NULL);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "ferry-exec-guard: cannot run %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }

  struct timespec interval = {0, 200 * 1000 * 1000};
  for (;;) {
    sigtimedwait(&watched, NULL, &interval);
    kill_group_if_orphaned(worker);
    int status = 0;
    pid_t done = waitpid(child, &status, WNOHANG);
    if (done == child) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      int signal = WTERMSIG(status);
      prctl(PR_SET_PDEATHSIG, 0);
      struct sigaction defaults;
      memset(&defaults, 0, sizeof defaults);
      defaults.sa_handler = SIG_DFL;
      sigaction(signal, &defaults, NULL);
      sigset_t only;
      sigemptyset(&only);
      sigaddset(&only, signal);
      sigprocmask(SIG_UNBLOCK, &only, NULL);
      kill(getpid(), signal);  // end as the handler ended
      return 128 + signal;
    }
    if (done < 0 && errno != EINTR) return 127;
  }
}
