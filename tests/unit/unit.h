/*
 * unit.h: what every unit test binary shares (tests/unit/unit.c): the runner's main(), the
 * run's seed and its random numbers, and the run's temporary directory.
 *
 * A test file includes this header, defines unit_suite() and nothing else of the runner:
 *
 *     Suite *unit_suite(void)
 *     {
 *             Suite *s = suite_create("codec");
 *             ...
 *             return s;
 *     }
 *
 * main() (unit.c) then
 *  1. sets unit_seed from TESSERA_TEST_SEED (a decimal number; anything else is an error,
 *     never a silent 0) or else from the clock, and prints it, so that a failure replays with
 *     TESSERA_TEST_SEED=N;
 *  2. makes the run's temporary directory, $TMPDIR (default /tmp)/tessera-NAME.XXXXXX;
 *  3. runs the suite with check's CK_ENV verbosity (CK_VERBOSITY, default "normal") and its
 *     fork mode (CK_FORK): every test in a child process of its own by default;
 *  4. removes the temporary directory and everything in it, in the runner process, so also
 *     when a test crashed or failed; TESSERA_KEEP=1 keeps it (its path is printed);
 *  5. exits 0 when every test passed, else 1.
 * Nothing here is thread-safe except unit_rng_next()/unit_rng_fill() on a state of the
 * caller's own and unit_tmp_path()/unit_tmpdir() in forked children (their names carry the pid).
 */
#ifndef TESSERA_TEST_UNIT_H
#define TESSERA_TEST_UNIT_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* Defined by each test file: its suite, built once by main() after the seed is set. */
Suite *unit_suite(void);

/* The run's seed (TESSERA_TEST_SEED, else the time), set before unit_suite() is called. A test
 * derives its own random state from it, e.g. `uint64_t rng = unit_seed + 3;`. */
extern uint64_t unit_seed;

/* splitmix64: the next number of the sequence *state steps through. */
uint64_t unit_rng_next(uint64_t *state);

/* Fills buf[0, len) with numbers of the sequence, eight bytes (little-endian) at a time. */
void unit_rng_fill(uint64_t *state, void *buf, size_t len);

/* The run's temporary directory (absolute, without a trailing '/'), made before the first test
 * and removed after the last. */
extern char unit_tmp_root[];

/* Writes to out a fresh path below unit_tmp_root, "ROOT/NAME.PID.N", unique within the run
 * (N counts the calls of this process); nothing is created. Aborts the test if it does not
 * fit in size bytes. */
void unit_tmp_path(char *out, size_t size, const char *name);

/* The same path, created as a directory (0700); aborts the test when that fails. */
void unit_tmpdir(char *out, size_t size, const char *name);

/* Removes path and everything below it, never following a symbolic link. Returns 0 (also when
 * path does not exist) or the negative errno of the first removal that failed. */
int unit_rmtree(const char *path);

#endif
