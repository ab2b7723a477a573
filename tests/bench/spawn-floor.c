/* spawn-floor N [BASE]: the cost of the processes themselves, which no init can
 * beat. posix_spawn()s N `sleep BASE+i` processes (i = 0..N-1, BASE 100000 by
 * default) one after the other and returns from the last call once all have
 * exec'd: glibc's posix_spawn is a vfork-style clone whose parent resumes only
 * after the child's execve succeeded. Prints the time that took (ms), then
 * waits forever, keeping its children, until it is killed.
 *
 * tests/bench/run compiles it and runs it as PID 1 of a PID namespace, exactly
 * like the managers it is compared with (see tests/bench/README.md). */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: spawn-floor N [BASE]\n");
		return 2;
	}
	char *end;
	long n = strtol(argv[1], &end, 10);
	long base = argc == 3 ? strtol(argv[2], NULL, 10) : 100000;
	if (*end || n < 1 || n > 100000 || base < 0) {
		fprintf(stderr, "spawn-floor: N must be 1..100000, BASE >= 0\n");
		return 2;
	}
	double t0 = now_ms();
	for (long i = 0; i < n; i++) {
		char arg[32];
		snprintf(arg, sizeof arg, "%ld", base + i);
		char *child[] = {"sleep", arg, NULL};
		pid_t pid;
		int err = posix_spawn(&pid, "/bin/sleep", NULL, NULL, child, environ);
		if (err) {
			fprintf(stderr, "spawn-floor: posix_spawn /bin/sleep: %s\n", strerror(err));
			return 1;
		}
	}
	printf("spawn-floor: %ld processes spawned and exec'd in %.3f ms\n", n, now_ms() - t0);
	fflush(stdout);
	for (;;)
		pause();
}
