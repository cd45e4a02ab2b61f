/*
 * Unit tests for common: crc32c, big-endian helpers, uuids, hex, size parsing and the
 * atomic file helpers.
 *
 * Randomised: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/common.h"

#include "unit.h"

/* ---------------------------------------------------------------- crc32c */

START_TEST(test_crc32c_vectors)
{
	uint8_t zeros[32] = { 0 }, ones[32];

	memset(ones, 0xff, sizeof(ones));
	ck_assert_uint_eq(tcrc32c(0, "123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(tcrc32c(0, "", 0), 0);
	ck_assert_uint_eq(tcrc32c(0, "a", 1), 0xc1d04330u);
	/* RFC 3720 B.4 test vectors */
	ck_assert_uint_eq(tcrc32c(0, zeros, 32), 0x8a9136aau);
	ck_assert_uint_eq(tcrc32c(0, ones, 32), 0x62a8ab43u);
	uint8_t inc[32];
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	ck_assert_uint_eq(tcrc32c(0, inc, 32), 0x46dd794eu);
}
END_TEST

START_TEST(test_crc32c_incremental)
{
	uint64_t rng = unit_seed;
	size_t len = 10000;
	uint8_t *buf = malloc(len);

	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)unit_rng_next(&rng);
	uint32_t whole = tcrc32c(0, buf, len);
	for (int iter = 0; iter < 200; iter++) {
		size_t a = unit_rng_next(&rng) % (len + 1);
		size_t b = a + unit_rng_next(&rng) % (len - a + 1);
		uint32_t c = tcrc32c(0, buf, a);
		c = tcrc32c(c, buf + a, b - a);
		c = tcrc32c(c, buf + b, len - b);
		ck_assert_uint_eq(c, whole);
	}
	/* byte at a time */
	uint32_t c = 0;
	for (size_t i = 0; i < len; i++)
		c = tcrc32c(c, buf + i, 1);
	ck_assert_uint_eq(c, whole);
	buf[len / 2] ^= 1;
	ck_assert_uint_ne(tcrc32c(0, buf, len), whole);
	free(buf);
}
END_TEST

/* ---------------------------------------------------------------- byte order */

START_TEST(test_be_roundtrip)
{
	uint64_t rng = unit_seed + 1;
	uint8_t b[8];

	be_put16(b, 0x1234);
	ck_assert_uint_eq(b[0], 0x12);
	ck_assert_uint_eq(b[1], 0x34);
	be_put32(b, 0x89abcdefu);
	ck_assert_mem_eq(b, "\x89\xab\xcd\xef", 4);
	be_put64(b, 0x0102030405060708ull);
	ck_assert_mem_eq(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	ck_assert_uint_eq(be_get64(b), 0x0102030405060708ull);
	be_put64(b, UINT64_MAX);
	ck_assert_uint_eq(be_get64(b), UINT64_MAX);
	be_put32(b, UINT32_MAX);
	ck_assert_uint_eq(be_get32(b), UINT32_MAX);
	be_put16(b, UINT16_MAX);
	ck_assert_uint_eq(be_get16(b), UINT16_MAX);

	for (int i = 0; i < 10000; i++) {
		uint64_t v = unit_rng_next(&rng);
		be_put64(b, v);
		ck_assert_uint_eq(be_get64(b), v);
		be_put32(b, (uint32_t)v);
		ck_assert_uint_eq(be_get32(b), (uint32_t)v);
		be_put16(b, (uint16_t)v);
		ck_assert_uint_eq(be_get16(b), (uint16_t)v);
	}
	/* big-endian keys sort like the integers */
	uint8_t x[8], y[8];
	for (int i = 0; i < 10000; i++) {
		uint64_t a = unit_rng_next(&rng) >> (unit_rng_next(&rng) % 64);
		uint64_t c = unit_rng_next(&rng);
		be_put64(x, a);
		be_put64(y, c);
		int cmp = memcmp(x, y, 8);
		ck_assert(a < c ? cmp < 0 : a > c ? cmp > 0 : cmp == 0);
	}
}
END_TEST

/* ---------------------------------------------------------------- uuid, hex */

START_TEST(test_uuid)
{
	static const uint8_t u[16] = { 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
				       0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0 };
	uint64_t rng = unit_seed + 2;
	char s[37];
	uint8_t got[16];

	tuuid_format(u, s);
	ck_assert_str_eq(s, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
	ck_assert_int_eq(tuuid_parse(s, got), 0);
	ck_assert_mem_eq(got, u, 16);
	ck_assert_int_eq(tuuid_parse("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", got), 0);
	ck_assert_mem_eq(got, u, 16);

	for (int i = 0; i < 1000; i++) {
		uint8_t r[16];
		for (int j = 0; j < 16; j++)
			r[j] = (uint8_t)unit_rng_next(&rng);
		tuuid_format(r, s);
		ck_assert_uint_eq(strlen(s), 36);
		ck_assert_int_eq(tuuid_parse(s, got), 0);
		ck_assert_mem_eq(got, r, 16);
	}

	static const char *const bad[] = {
		"",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",
		"0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0-",
		"0f1e2d3c-4b5a-6978-8796_a5b4c3d2e1f0",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1g0",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1 0",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1\xff" "0",
		"{f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
		"0f1e2d3c04b5a-6978-8796-a5b4c3d2e1f0",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
		"0f1e2d3c-4b5a-6978-8796-a5b4-3d2e1f0",
		"+f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
	};
	memset(got, 0x77, sizeof(got));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(tuuid_parse(bad[i], got) == -EINVAL, "accepted \"%s\"", bad[i]);
	ck_assert_uint_eq(got[0], 0x77); /* untouched on failure */
}
END_TEST

START_TEST(test_hex)
{
	char out[2 * 5 + 1];

	thex_encode((const uint8_t *)"\x00\x01\xab\xff\x7f", 5, out);
	ck_assert_str_eq(out, "0001abff7f");
	thex_encode((const uint8_t *)"", 0, out);
	ck_assert_str_eq(out, "");
}
END_TEST

/* ---------------------------------------------------------------- sizes */

START_TEST(test_parse_size)
{
	static const struct {
		const char *s;
		uint64_t v;
	} good[] = {
		{ "0", 0 },
		{ "512", 512 },
		{ "64k", 64u << 10 },
		{ "64K", 64u << 10 },
		{ "4M", 4u << 20 },
		{ "4m", 4u << 20 },
		{ "1G", 1u << 30 },
		{ "2T", 2ull << 40 },
		{ "4MiB", 4u << 20 },
		{ "4Mi", 4u << 20 },
		{ "4MB", 4u << 20 },
		{ "18446744073709551615", UINT64_MAX },
		{ "16777215T", 16777215ull << 40 },
	};
	static const char *const bad[] = {
		"", "-1", "4X", "k", "M", "4 M", " 4", "4 ", "+4", " -1", "\t-1", "-0",
		"18446744073709551616", "99999999999999999999999", "16777216T", "17179869184G",
		"4M5", "4MiBx", "4Mii", "1.5G", "0x10", "4kk", "512i",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		ck_assert_msg(tparse_size(good[i].s, &v) == 0, "rejected \"%s\"", good[i].s);
		ck_assert_msg(v == good[i].v, "\"%s\" -> %" PRIu64, good[i].s, v);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		ck_assert_msg(tparse_size(bad[i], &v) == -EINVAL, "accepted \"%s\" as %" PRIu64,
			      bad[i], v);
		ck_assert_uint_eq(v, 12345);
	}
	ck_assert_int_eq(tparse_size(NULL, &v), -EINVAL);
}
END_TEST

/* The option parser: whole decimal numbers within bounds, never a wrapped "-1". */
START_TEST(test_parse_uint)
{
	static const char *const bad[] = {
		"", "-1", "+1", " 1", "1 ", "1s", "0x10", "1.0", "-0",
	};
	uint64_t v = 7;

	ck_assert_int_eq(tparse_uint("0", 0, 10, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(tparse_uint("10", 0, 10, &v), 0);
	ck_assert_uint_eq(v, 10);
	ck_assert_int_eq(tparse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	v = 7;
	ck_assert_int_eq(tparse_uint("11", 0, 10, &v), -ERANGE);
	ck_assert_int_eq(tparse_uint("0", 1, 10, &v), -ERANGE);
	ck_assert_int_eq(tparse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(tparse_uint(bad[i], 0, UINT64_MAX, &v) == -EINVAL, "accepted \"%s\"",
			      bad[i]);
	ck_assert_int_eq(tparse_uint(NULL, 0, 1, &v), -EINVAL);
	ck_assert_uint_eq(v, 7);
}
END_TEST

/* ---------------------------------------------------------------- files */

static char tmpdir[128];

static void files_setup(void)
{
	unit_tmpdir(tmpdir, sizeof(tmpdir), "files");
}

static void files_teardown(void)
{
	ck_assert_int_eq(unit_rmtree(tmpdir), 0);
}

START_TEST(test_file_roundtrip)
{
	uint64_t rng = unit_seed + 3;
	char path[256];
	char *buf = NULL;
	size_t len = 0;
	struct stat st;
	mode_t um = umask(0);

	umask(um);
	snprintf(path, sizeof(path), "%s/f", tmpdir);

	/* empty file */
	ck_assert_int_eq(tfile_write_atomic(path, "", 0, 0644), 0);
	ck_assert_int_eq(tfile_read_all(path, 10, &buf, &len), 0);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(buf, "");
	free(buf);

	/* sizes around the buffer growth steps */
	static const size_t sizes[] = { 1, 4095, 4096, 4097, 8191, 100000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		uint8_t *data = malloc(n);
		for (size_t j = 0; j < n; j++)
			data[j] = (uint8_t)unit_rng_next(&rng);
		ck_assert_int_eq(tfile_write_atomic(path, data, n, 0600), 0);
		buf = NULL;
		ck_assert_int_eq(tfile_read_all(path, n, &buf, &len), 0);
		ck_assert_uint_eq(len, n);
		ck_assert_mem_eq(buf, data, n);
		ck_assert_uint_eq((uint8_t)buf[n], 0);
		free(buf);

		/* one byte over the limit */
		buf = (char *)0x1;
		len = 777;
		ck_assert_int_eq(tfile_read_all(path, n - 1, &buf, &len), -EFBIG);
		ck_assert_ptr_eq(buf, (char *)0x1);
		ck_assert_uint_eq(len, 777);
		free(data);
	}

	/* overwrite replaces, mode of the new file, no temp files left behind */
	ck_assert_int_eq(tfile_write_atomic(path, "hello", 5, 0640), 0);
	ck_assert_int_eq(tfile_read_all(path, 100, &buf, NULL), 0);
	ck_assert_str_eq(buf, "hello");
	free(buf);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0640 & ~(unsigned)um);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 1", tmpdir);
	ck_assert_int_eq(system(cmd), 0);

	/* errors */
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	ck_assert_int_eq(tfile_read_all(path, 100, &buf, &len), -ENOENT);
	snprintf(path, sizeof(path), "%s/nodir/f", tmpdir);
	ck_assert_int_eq(tfile_write_atomic(path, "x", 1, 0600), -ENOENT);
	ck_assert_int_eq(tfile_read_all(tmpdir, 100, &buf, &len), -EISDIR);
}
END_TEST

struct writer_arg {
	const char *path;
	char fill;
	int failures;
};

static void *writer_thread(void *p)
{
	struct writer_arg *a = p;
	char data[65536];

	memset(data, a->fill, sizeof(data));
	for (int i = 0; i < 50; i++)
		if (tfile_write_atomic(a->path, data, sizeof(data), 0600) != 0)
			a->failures++;
	return NULL;
}

/* Concurrent writers of one path (threads of one process): every read sees one writer's
 * complete content, never a mix. */
START_TEST(test_file_concurrent_writers)
{
	char path[256];
	pthread_t th[4];
	struct writer_arg args[4];

	snprintf(path, sizeof(path), "%s/shared", tmpdir);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct writer_arg){ .path = path, .fill = (char)('a' + i) };
		ck_assert_int_eq(pthread_create(&th[i], NULL, writer_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(args[i].failures, 0);
	}
	char *buf;
	size_t len;
	ck_assert_int_eq(tfile_read_all(path, 1 << 20, &buf, &len), 0);
	ck_assert_uint_eq(len, 65536);
	for (size_t i = 1; i < len; i++)
		ck_assert_int_eq(buf[i], buf[0]);
	free(buf);
}
END_TEST

START_TEST(test_mkdir_p)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/a/b/c", tmpdir);
	ck_assert_int_eq(tmkdir_p(path, 0755), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_int_eq(tmkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/a/b/d/", tmpdir);
	ck_assert_int_eq(tmkdir_p(path, 0755), 0);
	ck_assert_int_eq(tfsync_dir(path), 0);
	ck_assert_int_eq(tmkdir_p("", 0755), -EINVAL);
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	ck_assert_int_eq(tfile_write_atomic(path, "x", 1, 0600), 0);
	snprintf(path, sizeof(path), "%s/file/sub", tmpdir);
	ck_assert_int_eq(tmkdir_p(path, 0755), -ENOTDIR);
}
END_TEST

/* tgrow: doubles from the initial capacity until `need` fits, keeps the contents, leaves
 * everything untouched when no growth is needed or possible. */
START_TEST(test_tgrow)
{
	size_t cap = 0;
	uint32_t *a = NULL, *t;

	t = tgrow(a, &cap, 1, sizeof(*a), 4);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(cap, 4);
	a = t;
	for (uint32_t i = 0; i < 4; i++)
		a[i] = i;
	ck_assert_ptr_eq(tgrow(a, &cap, 4, sizeof(*a), 4), a);
	t = tgrow(a, &cap, 9, sizeof(*a), 4);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(cap, 16);
	a = t;
	for (uint32_t i = 0; i < 4; i++)
		ck_assert_uint_eq(a[i], i);
	ck_assert_ptr_null(tgrow(a, &cap, SIZE_MAX / 2 + 2, sizeof(*a), 4));
	ck_assert_uint_eq(cap, 16);
	free(a);
}
END_TEST

START_TEST(test_random_bytes)
{
	uint8_t a[32] = { 0 }, b[32] = { 0 };

	ck_assert_int_eq(trandom_bytes(a, sizeof(a)), 0);
	ck_assert_int_eq(trandom_bytes(b, sizeof(b)), 0);
	ck_assert(memcmp(a, b, sizeof(a)) != 0);
}
END_TEST

START_TEST(test_json_sum)
{
	const char *doc = "{\"dirs\":[{\"capacity\":100,\"free\": 40},{\"capacity\":28,"
			  "\"free\":2}],\"objects\":7,\"xcapacity\":5}";

	ck_assert_uint_eq(tjson_sum(doc, "capacity"), 128);
	ck_assert_uint_eq(tjson_sum(doc, "free"), 42);
	ck_assert_uint_eq(tjson_sum(doc, "objects"), 7);
	ck_assert_uint_eq(tjson_sum(doc, "missing"), 0);
	ck_assert_uint_eq(tjson_sum("", "capacity"), 0);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("common");
	TCase *tc = tcase_create("pure");

	tcase_add_test(tc, test_crc32c_vectors);
	tcase_add_test(tc, test_crc32c_incremental);
	tcase_add_test(tc, test_be_roundtrip);
	tcase_add_test(tc, test_uuid);
	tcase_add_test(tc, test_hex);
	tcase_add_test(tc, test_parse_size);
	tcase_add_test(tc, test_parse_uint);
	tcase_add_test(tc, test_random_bytes);
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_checked_fixture(tc, files_setup, files_teardown);
	tcase_add_test(tc, test_file_roundtrip);
	tcase_add_test(tc, test_file_concurrent_writers);
	tcase_add_test(tc, test_mkdir_p);
	tcase_add_test(tc, test_tgrow);
	tcase_add_test(tc, test_json_sum);
	suite_add_tcase(s, tc);
	return s;
}
