/*
 * The pod sandbox's process for the test node (what registry.k8s.io/pause runs, written here
 * because no registry is reachable): it holds the pod's namespaces open, reaps the zombies that
 * land on it as PID 1, and exits on SIGINT or SIGTERM. Built static by tests/support/images.py
 * (gcc -static) into an image of one file.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int signum) {
  (void)signum;
  _exit(0);
}

static void on_child(int signum) {
  (void)signum;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop, child;
  memset(&stop, 0, sizeof stop);
  memset(&child, 0, sizeof child);
  stop.sa_handler = on_stop;
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
