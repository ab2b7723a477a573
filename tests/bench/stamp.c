/* stamp [FILE]: CLOCK_MONOTONIC in nanoseconds, one line, to FILE (appended)
 * or to stdout. tests/bench/sandbox-guest runs it as the job (its exec is the
 * moment measured) and just before the request (the moment measured from). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec ts;
	char line[32];
	int fd = 1;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	int n = snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	if (argc > 1 && (fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
		perror(argv[1]);
		return 1;
	}
	return write(fd, line, (size_t)n) == n ? 0 : 1;
}
