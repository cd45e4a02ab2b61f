/*
 * Unit tests for scrub and stripe_io:
 *  - stripe_frag_seal/stripe_frag_check: a sealed fragment passes, every identity field and a
 *    flipped payload byte fail (data.c D4);
 *  - rebuild determinism (src/scrub/scrub.c R1): for every set of up to m lost fragments of a
 *    random stripe, decoding and re-sealing gives objects byte-identical to the originals;
 *  - stripe_gather, stripe_rec_check, scrub_exit_status, scrub_credentials_load;
 *  - the namespace phase on a real metadata store (no block server answers: 127.0.0.1:1):
 *    a dry run reports and changes nothing, a repair fixes a dangling entry, wrong link counts,
 *    an orphan, a lost inode (into /lost+found) and a stripe map past the end of a file, and a
 *    second run finds nothing.
 * Randomised: the seed is printed and TESSERA_SEED overrides it.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tessera/blockclient.h"
#include "tessera/codec.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/scrub.h"
#include "tessera/stripe_io.h"

static uint64_t seed;
static char root_dir[64];

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static const uint8_t UUID[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

/* Encodes a random stripe of data_len bytes into buf (stripe_buf_size(rec)), sealing every
 * fragment and filling rec. */
static uint8_t *make_stripe(struct codec *c, struct meta_stripe *rec, uint32_t data_len,
			    uint64_t *rng)
{
	unsigned k = codec_k(c), m = codec_m(c);
	uint8_t *dptr[64], *pptr[64];

	memset(rec, 0, sizeof(*rec));
	rec->version = 77;
	rec->k = (uint8_t)k;
	rec->m = (uint8_t)m;
	rec->data_len = data_len;
	rec->frag_len = (uint32_t)codec_frag_len(c, data_len);
	rec->present = (1ull << (k + m)) - 1;
	uint8_t *buf = calloc(1, stripe_buf_size(rec));
	ck_assert_ptr_nonnull(buf);
	for (unsigned i = 0; i < k; i++) {
		uint8_t *p = stripe_payload(buf, rec, i);
		for (size_t j = 0; j < rec->frag_len; j++) {
			size_t off = (size_t)i * rec->frag_len + j;
			p[j] = off < data_len ? (uint8_t)rng_next(rng) : 0;
		}
		dptr[i] = p;
	}
	for (unsigned i = 0; i < m; i++)
		pptr[i] = stripe_payload(buf, rec, k + i);
	codec_encode(c, dptr, pptr, rec->frag_len);
	for (unsigned i = 0; i < k + m; i++) {
		rec->servers[i] = (uint16_t)i;
		rec->crcs[i] = stripe_frag_seal(stripe_slot(buf, rec, i), UUID, 5, 9, rec->version, i,
						k, m, rec->frag_len, data_len);
	}
	return buf;
}

START_TEST(test_seal_check)
{
	uint64_t rng = seed;
	struct codec *c;
	struct meta_stripe rec;
	struct proto_frag_hdr h;
	uint8_t other[16];

	ck_assert_int_eq(codec_new(4, 2, &c), 0);
	uint8_t *buf = make_stripe(c, &rec, 100000, &rng);
	size_t len = PROTO_FRAG_HDR_SIZE + rec.frag_len;
	ck_assert_int_eq(stripe_rec_check(&rec, c), 0);
	for (unsigned i = 0; i < 6; i++) {
		uint8_t *o = stripe_slot(buf, &rec, i);
		ck_assert(stripe_frag_check(UUID, o, len, true, 5, 9, &rec, i, &h));
		ck_assert_uint_eq(h.stripe_len, 100000);
		ck_assert(stripe_frag_check(UUID, o, PROTO_FRAG_HDR_SIZE, false, 5, 9, &rec, i, NULL));
		ck_assert(!stripe_frag_check(UUID, o, len, true, 6, 9, &rec, i, NULL));
		ck_assert(!stripe_frag_check(UUID, o, len, true, 5, 8, &rec, i, NULL));
		ck_assert(!stripe_frag_check(UUID, o, len, true, 5, 9, &rec, (i + 1) % 6, NULL));
		ck_assert(!stripe_frag_check(UUID, o, len - 1, true, 5, 9, &rec, i, NULL));
		memcpy(other, UUID, 16);
		other[0] ^= 1;
		ck_assert(!stripe_frag_check(other, o, len, true, 5, 9, &rec, i, NULL));
		rec.version++;
		ck_assert(!stripe_frag_check(UUID, o, len, true, 5, 9, &rec, i, NULL));
		rec.version--;
		o[PROTO_FRAG_HDR_SIZE + (rng_next(&rng) % rec.frag_len)] ^= 0x40;
		ck_assert(!stripe_frag_check(UUID, o, len, true, 5, 9, &rec, i, NULL));
		/* the header alone does not show a payload flip: that is what --deep is for */
		ck_assert(stripe_frag_check(UUID, o, PROTO_FRAG_HDR_SIZE, false, 5, 9, &rec, i, NULL));
	}
	struct meta_stripe bad = rec;
	bad.k = 3;
	ck_assert_int_eq(stripe_rec_check(&bad, c), -EINVAL);
	bad = rec;
	bad.data_len = rec.frag_len * 4 + 1;
	ck_assert_int_eq(stripe_rec_check(&bad, c), -EINVAL);
	bad = rec;
	bad.frag_len = 0;
	ck_assert_int_eq(stripe_rec_check(&bad, c), -EINVAL);
	free(buf);
	codec_free(c);
}
END_TEST

/* R1: every loss pattern of up to m fragments rebuilds byte-identical objects. */
START_TEST(test_rebuild_identical)
{
	static const unsigned geo[][2] = { { 4, 2 }, { 2, 1 }, { 6, 3 }, { 10, 4 } };
	uint64_t rng = seed ^ (uint64_t)_i;
	unsigned k = geo[_i][0], m = geo[_i][1], n = k + m;
	struct codec *c;
	struct meta_stripe rec;

	ck_assert_int_eq(codec_new(k, m, &c), 0);
	uint32_t data_len = (uint32_t)(1 + rng_next(&rng) % (k * 8192));
	uint8_t *orig = make_stripe(c, &rec, data_len, &rng);
	size_t size = stripe_buf_size(&rec);
	uint8_t *work = malloc(size), *frags[64];
	ck_assert_ptr_nonnull(work);
	for (uint64_t lost = 1; lost < (1ull << n); lost++) {
		if ((unsigned)__builtin_popcountll(lost) > m)
			continue;
		memcpy(work, orig, size);
		for (unsigned i = 0; i < n; i++) {
			frags[i] = stripe_payload(work, &rec, i);
			if (lost & (1ull << i))
				memset(stripe_slot(work, &rec, i), 0xa5, PROTO_FRAG_HDR_SIZE + rec.frag_len);
		}
		ck_assert_int_eq(codec_decode(c, frags, ~lost & ((1ull << n) - 1), lost, rec.frag_len), 0);
		for (unsigned i = 0; i < n; i++)
			if (lost & (1ull << i))
				ck_assert_uint_eq(stripe_frag_seal(stripe_slot(work, &rec, i), UUID, 5, 9,
								   rec.version, i, k, m, rec.frag_len,
								   data_len), rec.crcs[i]);
		ck_assert_mem_eq(work, orig, size);
	}
	uint8_t *out = malloc(k * rec.frag_len + 10), *ref = malloc(k * rec.frag_len + 10);
	stripe_gather(orig, &rec, out, k * rec.frag_len + 10);
	memset(ref, 0, k * rec.frag_len + 10);
	for (unsigned i = 0; i < k; i++)
		memcpy(ref + (size_t)i * rec.frag_len, stripe_payload(orig, &rec, i), rec.frag_len);
	memset(ref + data_len, 0, k * rec.frag_len + 10 - data_len);
	ck_assert_mem_eq(out, ref, k * rec.frag_len + 10);
	free(out);
	free(ref);
	free(work);
	free(orig);
	codec_free(c);
}
END_TEST

START_TEST(test_exit_status)
{
	struct scrub_stats st = { 0 };

	ck_assert_int_eq(scrub_exit_status(&st, 0), 0);
	st.errors_fixed = 3;
	ck_assert_int_eq(scrub_exit_status(&st, 0), 1);
	st.errors_left = 1;
	ck_assert_int_eq(scrub_exit_status(&st, 0), 5);
	st.errors_fixed = 0;
	ck_assert_int_eq(scrub_exit_status(&st, 0), 4);
	ck_assert_int_eq(scrub_exit_status(&st, -EIO), 12);
}
END_TEST

static void root_setup(void)
{
	strcpy(root_dir, "/tmp/tessera-test-scrub.XXXXXX");
	if (!mkdtemp(root_dir))
		abort();
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void root_teardown(void)
{
	nftw(root_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct meta_superblock *make_sb(void)
{
	struct meta_superblock *sb = calloc(1, sizeof(*sb));

	ck_assert_ptr_nonnull(sb);
	sb->format_version = META_FORMAT_VERSION;
	memcpy(sb->fs_uuid, UUID, 16);
	sb->k = 4;
	sb->m = 2;
	sb->stripe_size = 1u << 20;
	sb->write_quorum = 5;
	strcpy(sb->bucket, "tessera");
	strcpy(sb->region, "us-east-1");
	strcpy(sb->credentials, "file:credentials");
	sb->n_servers = 6;
	for (uint32_t i = 0; i < 6; i++) {
		sb->servers[i].id = (uint16_t)i;
		strcpy(sb->servers[i].url, "http://127.0.0.1:1"); /* nothing listens */
		sb->servers[i].weight = 1;
	}
	return sb;
}

START_TEST(test_credentials)
{
	struct meta_superblock *sb = make_sb();
	struct blockclient_config cfg;
	char dir[128], path[160];

	snprintf(dir, sizeof(dir), "%s/creds", root_dir);
	ck_assert_int_eq(tmkdir_p(dir, 0700), 0);
	memset(&cfg, 0, sizeof(cfg));
	ck_assert_int_eq(scrub_credentials_load(dir, sb, &cfg), -ENOENT);
	snprintf(path, sizeof(path), "%s/credentials", dir);
	ck_assert_int_eq(tfile_write_atomic(path, "AK1 SECRET1\n", 12, 0600), 0);
	ck_assert_int_eq(scrub_credentials_load(dir, sb, &cfg), 0);
	ck_assert_str_eq(cfg.access_key, "AK1");
	ck_assert_str_eq(cfg.secret_key, "SECRET1");
	ck_assert_str_eq(cfg.bucket, "tessera");
	ck_assert_int_eq(tfile_write_atomic(path, "AK1\n", 4, 0600), 0);
	ck_assert_int_eq(scrub_credentials_load(dir, sb, &cfg), -EINVAL);
	strcpy(sb->credentials, "env");
	setenv("TESSERA_ACCESS_KEY", "AK2", 1);
	setenv("TESSERA_SECRET_KEY", "SK2", 1);
	ck_assert_int_eq(scrub_credentials_load(dir, sb, &cfg), 0);
	ck_assert_str_eq(cfg.access_key, "AK2");
	ck_assert_str_eq(cfg.secret_key, "SK2");
	free(sb);
}
END_TEST

static struct meta_inode mk_inode(uint64_t ino, uint32_t mode, uint32_t nlink, uint64_t size)
{
	return (struct meta_inode){ .ino = ino, .mode = mode, .nlink = nlink, .size = size,
				    .generation = 1 };
}

static int count_garbage(void *ctx, uint64_t seq, const struct meta_garbage *g)
{
	(*(int *)ctx)++;
	return 0;
}

static struct scrub_stats run_scrub(struct meta *m, struct blockclient *bc, bool dry_run)
{
	struct scrub_options opt = { .dry_run = dry_run, .jobs = 2 };
	struct scrub_stats st;
	struct scrub *s;

	ck_assert_int_eq(scrub_new(m, bc, &opt, &s), 0);
	ck_assert_int_eq(scrub_run(s, &st), 0);
	scrub_free(s);
	return st;
}

START_TEST(test_namespace)
{
	struct meta_superblock *sb = make_sb();
	struct blockclient_config cfg = { .bucket = "tessera", .access_key = "a",
					  .secret_key = "b", .connect_timeout_ms = 500,
					  .request_timeout_ms = 1000 };
	uint16_t ids[6];
	const char *urls[6];
	struct blockclient *bc;
	struct meta *m;
	struct meta_batch *b;
	struct meta_inode in;
	uint64_t d, f, orphan, lost, got;
	char dir[128];

	snprintf(dir, sizeof(dir), "%s/ns", root_dir);
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	for (int i = 0; i < 6; i++) {
		ids[i] = (uint16_t)i;
		urls[i] = sb->servers[i].url;
	}
	ck_assert_int_eq(blockclient_new(&cfg, ids, urls, 6, &bc), 0);

	ck_assert_int_eq(meta_alloc_ino(m, &d), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &f), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &orphan), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &lost), 0);
	b = meta_batch_new(m);
	in = mk_inode(d, S_IFDIR | 0755, 2, 0);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, META_ROOT_INO, "d", 1, d, S_IFDIR);   /* root nlink stays 2 */
	in = mk_inode(f, S_IFREG | 0644, 3, 10);                        /* one entry, nlink 3 */
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, d, "f", 1, f, S_IFREG);
	meta_batch_dentry_put(b, d, "ghost", 5, 999999, S_IFREG);       /* dangling */
	in = mk_inode(orphan, S_IFREG | 0644, 0, 0);
	in.flags = META_INODE_F_ORPHAN;
	meta_batch_inode_put(b, &in);
	in = mk_inode(lost, S_IFREG | 0600, 1, 0);
	meta_batch_inode_put(b, &in);
	struct meta_stripe rec = { .version = 5, .data_len = 100, .frag_len = 64, .k = 4, .m = 2,
				   .present = 0x3f };
	for (int i = 0; i < 6; i++)
		rec.servers[i] = (uint16_t)i;
	meta_batch_stripe_put(b, f, 3, &rec); /* past the end of a 10-byte file */
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	meta_batch_free(b);

	struct scrub_stats st = run_scrub(m, bc, true);
	ck_assert_uint_eq(st.ns_fixed, 0);
	/* ghost, orphan, lost, nlink of root and f, stripe past the end */
	ck_assert_uint_eq(st.ns_errors, 6);
	ck_assert_int_eq(meta_dentry_get(m, d, "ghost", 5, &got, NULL), 0);
	ck_assert_int_eq(meta_inode_get(m, orphan, &in), 0);
	ck_assert_uint_ge(st.warnings, 6); /* every server unreachable */

	st = run_scrub(m, bc, false);
	ck_assert_uint_eq(st.ns_errors, 6);
	ck_assert_uint_eq(st.ns_fixed, 6);
	ck_assert_uint_eq(st.errors_left, 0);
	ck_assert_int_eq(scrub_exit_status(&st, 0), 1);
	ck_assert_int_eq(meta_dentry_get(m, d, "ghost", 5, &got, NULL), -ENOENT);
	ck_assert_int_eq(meta_inode_get(m, orphan, &in), -ENOENT);
	ck_assert_int_eq(meta_inode_get(m, f, &in), 0);
	ck_assert_uint_eq(in.nlink, 1);
	ck_assert_int_eq(meta_stripe_get(m, f, 3, &rec), -ENOENT);
	int queued = 0;
	ck_assert_int_eq(meta_garbage_list(m, count_garbage, &queued), 0);
	ck_assert_int_eq(queued, 6);
	uint64_t lf;
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "lost+found", 10, &lf, NULL), 0);
	char name[32];
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)lost);
	ck_assert_int_eq(meta_dentry_get(m, lf, name, strlen(name), &got, NULL), 0);
	ck_assert_uint_eq(got, lost);
	ck_assert_int_eq(meta_inode_get(m, META_ROOT_INO, &in), 0);
	ck_assert_uint_eq(in.nlink, 4); /* ., .., d, lost+found */

	st = run_scrub(m, bc, false);
	ck_assert_uint_eq(st.ns_errors, 0);
	ck_assert_int_eq(scrub_exit_status(&st, 0), 0);
	ck_assert_uint_eq(st.inodes, 5);

	/* paths */
	struct scrub_options opt = { .dry_run = true };
	struct scrub *s;
	char path[256];
	ck_assert_int_eq(scrub_new(m, bc, &opt, &s), 0);
	ck_assert_int_eq(scrub_path(s, f, path, sizeof(path)), -ENOENT); /* before the walk */
	ck_assert_int_eq(scrub_run(s, &st), 0);
	ck_assert_int_eq(scrub_path(s, f, path, sizeof(path)), 4);
	ck_assert_str_eq(path, "/d/f");
	ck_assert_int_gt(scrub_path(s, lost, path, sizeof(path)), 0);
	char want[64];
	snprintf(want, sizeof(want), "/lost+found/#%llu", (unsigned long long)lost);
	ck_assert_str_eq(path, want);
	ck_assert_int_eq(scrub_path(s, f, path, 4), -ENAMETOOLONG);
	scrub_free(s);

	blockclient_free(bc);
	meta_close(m);
	free(sb);
}
END_TEST

static Suite *scrub_suite(void)
{
	Suite *s = suite_create("scrub");
	TCase *tc = tcase_create("stripe_io");

	tcase_add_test(tc, test_seal_check);
	tcase_add_loop_test(tc, test_rebuild_identical, 0, 4);
	tcase_add_test(tc, test_exit_status);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	tc = tcase_create("engine");
	tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
	tcase_add_test(tc, test_credentials);
	tcase_add_test(tc, test_namespace);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("TESSERA_SEED");
	SRunner *sr;
	int failed;

	seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	printf("test_scrub: seed %" PRIu64 " (set TESSERA_SEED to repeat)\n", seed);
	sr = srunner_create(scrub_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
