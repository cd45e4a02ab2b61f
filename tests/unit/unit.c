/*
 * unit.c: the runner of every unit test binary (see unit.h): seed, random numbers, the run's
 * temporary directory and main(). Linked into each tests/unit/test_*.c executable.
 */
#include "unit.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tessera/common.h"

uint64_t unit_seed;
char unit_tmp_root[256];

uint64_t unit_rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void unit_rng_fill(uint64_t *state, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t v = unit_rng_next(state);
		size_t n = len < 8 ? len : 8;

		for (size_t i = 0; i < n; i++)
			p[i] = (uint8_t)(v >> (8 * i));
		p += n;
		len -= n;
	}
}

void unit_tmp_path(char *out, size_t size, const char *name)
{
	static unsigned n;
	int len = snprintf(out, size, "%s/%s.%ld.%u", unit_tmp_root, name, (long)getpid(), n++);

	ck_assert_msg(len > 0 && (size_t)len < size, "temporary path for \"%s\" too long", name);
}

void unit_tmpdir(char *out, size_t size, const char *name)
{
	unit_tmp_path(out, size, name);
	ck_assert_msg(mkdir(out, 0700) == 0, "mkdir \"%s\": %s", out, strerror(errno));
}

static int rmtree_first_err;

static int rmtree_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) != 0 && rmtree_first_err == 0)
		rmtree_first_err = -errno;
	return 0;
}

int unit_rmtree(const char *path)
{
	rmtree_first_err = 0;
	if (nftw(path, rmtree_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
		return -errno;
	return rmtree_first_err;
}

/* unit_seed from TESSERA_TEST_SEED, else the clock. Returns 0, or -EINVAL for a bad value. */
static int seed_init(const char *prog)
{
	const char *env = getenv("TESSERA_TEST_SEED");
	struct timespec ts;

	if (env && *env) {
		if (tparse_uint(env, 0, UINT64_MAX, &unit_seed) != 0) {
			fprintf(stderr, "%s: TESSERA_TEST_SEED \"%s\" is not a decimal number\n",
				prog, env);
			return -EINVAL;
		}
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		unit_seed = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	}
	printf("%s: seed %" PRIu64 " (TESSERA_TEST_SEED=%" PRIu64 " replays this run)\n", prog,
	       unit_seed, unit_seed);
	fflush(stdout); /* before check forks: a child must not print it again */
	return 0;
}

static int tmp_root_init(const char *prog)
{
	const char *tmp = getenv("TMPDIR");
	int len;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	len = snprintf(unit_tmp_root, sizeof(unit_tmp_root), "%s/tessera-%s.XXXXXX", tmp, prog);
	if (len < 0 || (size_t)len >= sizeof(unit_tmp_root)) {
		fprintf(stderr, "%s: TMPDIR \"%s\" is too long\n", prog, tmp);
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(unit_tmp_root)) {
		fprintf(stderr, "%s: cannot make a directory in \"%s\": %s\n", prog, tmp,
			strerror(errno));
		return -errno;
	}
	return 0;
}

int main(void)
{
	const char *prog = program_invocation_short_name;
	const char *keep = getenv("TESSERA_KEEP");
	SRunner *sr;
	int failed, rc;

	if (seed_init(prog) != 0 || tmp_root_init(prog) != 0)
		return EXIT_FAILURE;
	sr = srunner_create(unit_suite());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (keep && strcmp(keep, "1") == 0) {
		printf("%s: temporary directory kept: %s\n", prog, unit_tmp_root);
	} else if ((rc = unit_rmtree(unit_tmp_root)) != 0) {
		fprintf(stderr, "%s: cannot remove \"%s\": %s\n", prog, unit_tmp_root,
			strerror(-rc));
		failed++;
	}
	if (failed)
		printf("%s: %d failed; TESSERA_TEST_SEED=%" PRIu64 " replays this run\n", prog,
		       failed, unit_seed);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
