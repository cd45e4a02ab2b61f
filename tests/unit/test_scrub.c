/*
 * Unit tests for scrub and the stripe layer:
 *  - stripe_frag_seal/stripe_frag_check: a sealed fragment passes, every identity field and a
 *    flipped payload byte fail (data.c D4);
 *  - rebuild determinism (src/scrub/scrub.c R1): for every set of up to m lost fragments of a
 *    random stripe, decoding and re-sealing gives objects byte-identical to the originals;
 *  - stripe_gather, stripe_rec_check, scrub_exit_status, stripe_client_config;
 *  - the namespace phase on a real metadata store (no block server answers: 127.0.0.1:1):
 *    a dry run reports and changes nothing, a repair fixes a dangling entry, wrong link counts,
 *    an orphan, a lost inode (into /lost+found) and a stripe map past the end of a file, and a
 *    second run finds nothing; an unlinked inode that opt.in_use reports stays (mounted mode);
 *  - the checkpoint file: encode/decode round trip, damaged ones refused; a run resumes from a
 *    matching one (its counters carried: scrub.c R7) and removes it, ignores one of other
 *    options, keeps it when cancelled;
 *  - the control protocol's lines (control.h): requests, events with hostile strings,
 *    progress and stats round-trip; random and truncated lines are refused, never crash.
 * Randomised: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/codec.h"
#include "tessera/common.h"
#include "tessera/control.h"
#include "tessera/meta.h"
#include "tessera/scrub.h"
#include "tessera/stripe.h"

#include "unit.h"


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
			p[j] = off < data_len ? (uint8_t)unit_rng_next(rng) : 0;
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
	uint64_t rng = unit_seed;
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
		o[PROTO_FRAG_HDR_SIZE + (unit_rng_next(&rng) % rec.frag_len)] ^= 0x40;
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
	uint64_t rng = unit_seed ^ (uint64_t)_i;
	unsigned k = geo[_i][0], m = geo[_i][1], n = k + m;
	struct codec *c;
	struct meta_stripe rec;

	ck_assert_int_eq(codec_new(k, m, &c), 0);
	uint32_t data_len = (uint32_t)(1 + unit_rng_next(&rng) % (k * 8192));
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

	unit_tmp_path(dir, sizeof(dir), "creds");
	ck_assert_int_eq(tmkdir_p(dir, 0700), 0);
	memset(&cfg, 0, sizeof(cfg));
	ck_assert_int_eq(stripe_client_config(dir, sb, &cfg), -ENOENT);
	snprintf(path, sizeof(path), "%s/credentials", dir);
	ck_assert_int_eq(tfile_write_atomic(path, "AK1 SECRET1\n", 12, 0600), 0);
	ck_assert_int_eq(stripe_client_config(dir, sb, &cfg), 0);
	ck_assert_str_eq(cfg.access_key, "AK1");
	ck_assert_str_eq(cfg.secret_key, "SECRET1");
	ck_assert_str_eq(cfg.bucket, "tessera");
	ck_assert_int_eq(tfile_write_atomic(path, "AK1\n", 4, 0600), 0);
	ck_assert_int_eq(stripe_client_config(dir, sb, &cfg), -EINVAL);
	strcpy(sb->credentials, "env");
	setenv("TESSERA_ACCESS_KEY", "AK2", 1);
	setenv("TESSERA_SECRET_KEY", "SK2", 1);
	ck_assert_int_eq(stripe_client_config(dir, sb, &cfg), 0);
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

static struct scrub_stats run_scrub(struct meta *m, struct blockstore *bc, bool dry_run)
{
	struct scrub_options opt = { .dry_run = dry_run, .jobs = 2 };
	struct scrub_stats st;
	struct scrub *s;

	ck_assert_int_eq(scrub_new(m, bc, &opt, &s), 0);
	ck_assert_int_eq(scrub_run(s, &st), 0);
	scrub_free(s);
	return st;
}

/* A new filesystem under the run's temporary directory (name), open, with a block client for its six
 * servers (nobody listens there: every server is unreachable). */
static void open_fs(const char *name, struct meta **ret_m, struct blockstore **ret_bc)
{
	struct meta_superblock *sb = make_sb();
	struct blockclient_config cfg = { .bucket = "tessera", .access_key = "a",
					  .secret_key = "b", .connect_timeout_ms = 500,
					  .request_timeout_ms = 1000 };
	uint16_t ids[6];
	const char *urls[6];
	char dir[128];

	unit_tmp_path(dir, sizeof(dir), name);
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(dir, ret_m), 0);
	for (int i = 0; i < 6; i++) {
		ids[i] = (uint16_t)i;
		urls[i] = sb->servers[i].url;
	}
	ck_assert_int_eq(blockstore_client_new(&cfg, ids, urls, 6, ret_bc), 0);
	free(sb);
}

START_TEST(test_namespace)
{
	struct blockstore *bc;
	struct meta *m;
	struct meta_batch *b;
	struct meta_inode in;
	uint64_t d, f, orphan, lost, got;

	open_fs("ns", &m, &bc);

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

	blockstore_free(bc);
	meta_close(m);
}
END_TEST

static int count_stripes_all(void *ctx, uint64_t ino, uint64_t stripe,
			     const struct meta_stripe *rec)
{
	uint64_t *c = ctx; /* c[0]: the inode, c[1]: its stripe maps */

	(void)stripe;
	(void)rec;
	if (ino == c[0])
		c[1]++;
	return 0;
}

/* Damage the per-directory walk cannot see: a cycle of directories cut off from the root,
 * entries inside a directory that does not exist or is a file, stripe maps of a missing
 * inode. */
START_TEST(test_namespace_detached)
{
	struct blockstore *bc;
	struct meta *m;
	struct meta_batch *b;
	struct meta_inode in;
	uint64_t a, bd, g, f2, f3, got, lf;
	const uint64_t gone_dir = 777777, gone_file = 888888;
	char name[32];

	open_fs("detached", &m, &bc);
	ck_assert_int_eq(meta_alloc_ino(m, &a), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &bd), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &g), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &f2), 0);
	ck_assert_int_eq(meta_alloc_ino(m, &f3), 0);

	b = meta_batch_new(m);
	in = mk_inode(a, S_IFDIR | 0755, 3, 0);
	meta_batch_inode_put(b, &in);
	in = mk_inode(bd, S_IFDIR | 0755, 3, 0);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, bd, "a", 1, a, S_IFDIR); /* a in b, b in a: a closed loop */
	meta_batch_dentry_put(b, a, "b", 1, bd, S_IFDIR);
	in = mk_inode(g, S_IFREG | 0644, 1, 0);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, a, "g", 1, g, S_IFREG);
	in = mk_inode(f2, S_IFREG | 0644, 1, 0);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, gone_dir, "x", 1, f2, S_IFREG); /* in a missing directory */
	in = mk_inode(f3, S_IFREG | 0644, 1, 0);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, META_ROOT_INO, "f3", 2, f3, S_IFREG);
	meta_batch_dentry_put(b, f3, "y", 1, f2, S_IFREG); /* inside a regular file */
	struct meta_stripe rec = { .version = 5, .data_len = 100, .frag_len = 64, .k = 4, .m = 2,
				   .present = 0x3f };
	for (int i = 0; i < 6; i++)
		rec.servers[i] = (uint16_t)i;
	meta_batch_stripe_put(b, gone_file, 0, &rec);
	meta_batch_stripe_put(b, gone_file, 1, &rec);
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	meta_batch_free(b);

	/* dry run: every kind reported, nothing changed */
	struct scrub_stats st = run_scrub(m, bc, true);
	ck_assert_uint_eq(st.ns_fixed, 0);
	/* x, y, f2 lost, the cycle, the stray stripe maps */
	ck_assert_uint_eq(st.ns_errors, 5);
	ck_assert_int_eq(scrub_exit_status(&st, 0), 4);
	ck_assert_int_eq(meta_dentry_get(m, gone_dir, "x", 1, &got, NULL), 0);
	ck_assert_int_eq(meta_dentry_get(m, bd, "a", 1, &got, NULL), 0);
	uint64_t cnt[2] = { gone_file, 0 };
	ck_assert_int_eq(meta_stripe_list_all(m, count_stripes_all, cnt), 0);
	ck_assert_uint_eq(cnt[1], 2);

	st = run_scrub(m, bc, false);
	ck_assert_uint_ge(st.ns_fixed, 5);
	ck_assert_uint_eq(st.errors_left, 0);
	ck_assert_int_eq(scrub_exit_status(&st, 0), 1);
	/* the bad entries are gone, f2 is in lost+found */
	ck_assert_int_eq(meta_dentry_get(m, gone_dir, "x", 1, &got, NULL), -ENOENT);
	ck_assert_int_eq(meta_dentry_get(m, f3, "y", 1, &got, NULL), -ENOENT);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "lost+found", 10, &lf, NULL), 0);
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)f2);
	ck_assert_int_eq(meta_dentry_get(m, lf, name, strlen(name), &got, NULL), 0);
	/* the loop is cut at one of its two directories, which moved to lost+found; the other
	 * stays inside it, g stays in a */
	bool cut_a = meta_dentry_get(m, bd, "a", 1, &got, NULL) == -ENOENT;
	bool cut_b = meta_dentry_get(m, a, "b", 1, &got, NULL) == -ENOENT;
	ck_assert_msg(cut_a != cut_b, "exactly one entry of the loop removed");
	const uint64_t moved = cut_a ? a : bd, kept = cut_a ? bd : a;
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)moved);
	ck_assert_int_eq(meta_dentry_get(m, lf, name, strlen(name), &got, NULL), 0);
	ck_assert_uint_eq(got, moved);
	ck_assert_int_eq(meta_dentry_get(m, a, "g", 1, &got, NULL), 0);
	ck_assert_int_eq(meta_inode_get(m, moved, &in), 0);
	ck_assert_uint_eq(in.rdev, lf); /* '..' */
	ck_assert_uint_eq(in.nlink, 3);
	ck_assert_int_eq(meta_inode_get(m, kept, &in), 0);
	ck_assert_uint_eq(in.nlink, 2);
	ck_assert_int_eq(meta_inode_get(m, lf, &in), 0);
	ck_assert_uint_eq(in.nlink, 3);
	/* the stray stripe maps are released, their fragments queued */
	cnt[1] = 0;
	ck_assert_int_eq(meta_stripe_list_all(m, count_stripes_all, cnt), 0);
	ck_assert_uint_eq(cnt[1], 0);
	int queued = 0;
	ck_assert_int_eq(meta_garbage_list(m, count_garbage, &queued), 0);
	ck_assert_int_eq(queued, 12);

	st = run_scrub(m, bc, false);
	ck_assert_uint_eq(st.ns_errors, 0);
	ck_assert_int_eq(scrub_exit_status(&st, 0), 0);

	blockstore_free(bc);
	meta_close(m);
}
END_TEST

/* ---- checkpoints */

static void random_stats(struct scrub_stats *st, uint64_t *rng)
{
	memset(st, 0, sizeof(*st));
#define X(f) st->f = unit_rng_next(rng) >> (unit_rng_next(rng) % 64);
	SCRUB_STATS_FIELDS(X)
#undef X
}

START_TEST(test_checkpoint_codec)
{
	uint64_t rng = unit_seed ^ 0xc4ec;
	char buf[SCRUB_CHECKPOINT_MAX];

	for (int iter = 0; iter < 200; iter++) {
		struct scrub_checkpoint c = { 0 }, d;
		for (int i = 0; i < 16; i++)
			c.fs_uuid[i] = (uint8_t)unit_rng_next(&rng);
		c.deep = unit_rng_next(&rng) & 1;
		c.gc = unit_rng_next(&rng) & 1;
		c.skip_namespace = unit_rng_next(&rng) & 1;
		c.stripes_done = (unit_rng_next(&rng) % 4) == 0;
		if (!c.stripes_done) {
			c.ino = unit_rng_next(&rng);
			c.stripe = unit_rng_next(&rng) >> 20;
		}
		c.created_s = unit_rng_next(&rng) >> 30;
		struct scrub_stats all;
		random_stats(&all, &rng);
		/* only the carried counters survive */
		c.st.stripes = all.stripes;
		c.st.errors_fixed = all.errors_fixed;
		c.st.bytes_rebuilt = all.bytes_rebuilt;
		c.st.repair_ns = all.repair_ns;
		int len = scrub_checkpoint_encode(&c, buf, sizeof(buf));
		ck_assert_int_gt(len, 0);
		ck_assert_uint_eq(strlen(buf), (size_t)len);
		ck_assert_int_eq(scrub_checkpoint_decode(buf, &d), 0);
		ck_assert_mem_eq(&c, &d, sizeof(c));
		ck_assert_int_eq(scrub_checkpoint_encode(&c, buf, 40), -ENOSPC);
		/* every truncation before the last line is refused */
		len = scrub_checkpoint_encode(&c, buf, sizeof(buf));
		const char *last = strstr(buf, "\nstats");
		ck_assert_ptr_nonnull(last);
		for (size_t cut = 0; cut < (size_t)(last - buf); cut++) {
			char t[SCRUB_CHECKPOINT_MAX];
			memcpy(t, buf, cut);
			t[cut] = '\0';
			ck_assert_int_eq(scrub_checkpoint_decode(t, &d), -EBADMSG);
		}
	}
	struct scrub_checkpoint d;
	ck_assert_int_eq(scrub_checkpoint_decode("", &d), -EBADMSG);
	ck_assert_int_eq(scrub_checkpoint_decode("tessera-scrub checkpoint 2\n", &d), -EBADMSG);
	const char *ok = "tessera-scrub checkpoint 1\nfs 01020304-0506-0708-090a-0b0c0d0e0f10\n"
			 "created 5\noptions deep=1 gc=0 namespace=1\nposition 7 9\n"
			 "stats stripes=3 future_counter=8\n";
	ck_assert_int_eq(scrub_checkpoint_decode(ok, &d), 0);
	ck_assert(d.deep && !d.gc && !d.skip_namespace && !d.stripes_done);
	ck_assert_uint_eq(d.ino, 7);
	ck_assert_uint_eq(d.stripe, 9);
	ck_assert_uint_eq(d.st.stripes, 3);
	ck_assert_mem_eq(d.fs_uuid, UUID, 16);
	const char *bad[] = {
		"tessera-scrub checkpoint 1\nfs 01020304-0506-0708-090a-0b0c0d0e0f10\ncreated 5\n"
		"options deep=1 gc=0 namespace=1\nposition 7\nstats stripes=3\n",
		"tessera-scrub checkpoint 1\nfs nope\ncreated 5\n"
		"options deep=1 gc=0 namespace=1\nposition 7 9\nstats stripes=3\n",
		"tessera-scrub checkpoint 1\nfs 01020304-0506-0708-090a-0b0c0d0e0f10\ncreated 5\n"
		"options deep=2 gc=0 namespace=1\nposition 7 9\nstats stripes=3\n",
		"tessera-scrub checkpoint 1\nfs 01020304-0506-0708-090a-0b0c0d0e0f10\ncreated 5\n"
		"options deep=1 gc=0 namespace=1\nposition 7 9\nstats stripes=x\n",
		"tessera-scrub checkpoint 1\nfs 01020304-0506-0708-090a-0b0c0d0e0f10\ncreated 5\n"
		"options deep=1 gc=0 namespace=1\nposition 7 9\nstats stripes=3\nwhat 1\n",
	};
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(bad); i++)
		ck_assert_int_eq(scrub_checkpoint_decode(bad[i], &d), -EBADMSG);
}
END_TEST

static int run_with(struct meta *m, struct blockstore *bc, struct scrub_options *opt,
		    bool cancel, struct scrub_stats *st)
{
	struct scrub *s;
	int r;

	ck_assert_int_eq(scrub_new(m, bc, opt, &s), 0);
	if (cancel)
		scrub_cancel(s);
	r = scrub_run(s, st);
	scrub_free(s);
	return r;
}

/* Also the mounted-mode rule: an unlinked inode in use is not an orphan to remove. */
static bool in_use_all(void *ctx, uint64_t ino)
{
	(void)ino;
	(*(int *)ctx)++;
	return true;
}

START_TEST(test_checkpoint_run)
{
	struct meta_superblock *sb = make_sb();
	struct blockclient_config cfg = { .bucket = "tessera", .access_key = "a",
					  .secret_key = "b", .connect_timeout_ms = 500,
					  .request_timeout_ms = 1000 };
	uint16_t ids[6];
	const char *urls[6];
	struct blockstore *bc;
	struct meta *m;
	struct scrub_stats st;
	char dir[128], ck[192], buf[SCRUB_CHECKPOINT_MAX];
	struct stat sbuf;

	unit_tmp_path(dir, sizeof(dir), "ckpt");
	snprintf(ck, sizeof(ck), "%s/%s", dir, SCRUB_CHECKPOINT_NAME);
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	for (int i = 0; i < 6; i++) {
		ids[i] = (uint16_t)i;
		urls[i] = sb->servers[i].url;
	}
	ck_assert_int_eq(blockstore_client_new(&cfg, ids, urls, 6, &bc), 0);
	/* an unlinked inode, in use */
	uint64_t orphan;
	ck_assert_int_eq(meta_alloc_ino(m, &orphan), 0);
	struct meta_batch *b = meta_batch_new(m);
	struct meta_inode in = mk_inode(orphan, S_IFREG | 0644, 0, 0);
	in.flags = META_INODE_F_ORPHAN;
	meta_batch_inode_put(b, &in);
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	meta_batch_free(b);

	int asked = 0;
	struct scrub_options opt = { .jobs = 2, .checkpoint = ck, .in_use = in_use_all,
				     .in_use_ctx = &asked };
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.resumed, 0);
	ck_assert_uint_eq(st.ns_errors, 0);
	ck_assert_int_gt(asked, 0);
	ck_assert_int_eq(meta_inode_get(m, orphan, &in), 0);
	ck_assert_int_eq(stat(ck, &sbuf), -1);

	/* a matching checkpoint: resumed, counters carried, removed at the end */
	struct scrub_checkpoint c = { .stripes_done = true, .created_s = 1 };
	memcpy(c.fs_uuid, UUID, 16);
	c.st.stripes = 5;
	c.st.stripes_repaired = 1;
	c.st.errors_fixed = 1;
	int len = scrub_checkpoint_encode(&c, buf, sizeof(buf));
	ck_assert_int_gt(len, 0);
	ck_assert_int_eq(tfile_write_atomic(ck, buf, (size_t)len, 0600), 0);
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.resumed, 1);
	ck_assert_uint_eq(st.stripes, 5);
	ck_assert_int_eq(scrub_exit_status(&st, 0), SCRUB_EXIT_FIXED);
	ck_assert_int_eq(stat(ck, &sbuf), -1);

	/* cancelled: the checkpoint stays */
	ck_assert_int_eq(tfile_write_atomic(ck, buf, (size_t)len, 0600), 0);
	ck_assert_int_eq(run_with(m, bc, &opt, true, &st), -ECANCELED);
	ck_assert_int_eq(scrub_exit_status(&st, -ECANCELED) & SCRUB_EXIT_OPERATIONAL,
			 SCRUB_EXIT_OPERATIONAL);
	ck_assert_int_eq(stat(ck, &sbuf), 0);

	/* a dry run neither uses nor removes it */
	opt.dry_run = true;
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.resumed, 0);
	ck_assert_int_eq(stat(ck, &sbuf), 0);
	opt.dry_run = false;

	/* other options: ignored (not resumed), replaced, removed at the end */
	opt.deep = true;
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.resumed, 0);
	ck_assert_uint_eq(st.stripes, 0);
	ck_assert_int_eq(stat(ck, &sbuf), -1);

	/* no_resume: ignored */
	opt.deep = false;
	opt.no_resume = true;
	ck_assert_int_eq(tfile_write_atomic(ck, buf, (size_t)len, 0600), 0);
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.resumed, 0);
	ck_assert_int_eq(stat(ck, &sbuf), -1);

	/* without in_use the unlinked inode is an orphan and goes */
	opt.in_use = NULL;
	ck_assert_int_eq(run_with(m, bc, &opt, false, &st), 0);
	ck_assert_uint_eq(st.ns_fixed, 1);
	ck_assert_int_eq(meta_inode_get(m, orphan, &in), -ENOENT);

	blockstore_free(bc);
	meta_close(m);
	free(sb);
}
END_TEST

/* ---- the control protocol */

static void random_str(char *out, size_t max, uint64_t *rng)
{
	size_t len = unit_rng_next(rng) % max;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)unit_rng_next(rng);
		if (c == 0)
			c = ' ';
		out[i] = (char)(unit_rng_next(rng) % 3 ? c : " %\n\t+-"[unit_rng_next(rng) % 6]);
	}
	out[len] = '\0';
}

START_TEST(test_control_codec)
{
	uint64_t rng = unit_seed ^ 0xc0de;
	char line[CONTROL_LINE_MAX], copy[CONTROL_LINE_MAX];
	struct control_msg m;

	for (int iter = 0; iter < 300; iter++) {
		/* a request */
		struct scrub_options o = { 0 }, d;
		o.dry_run = unit_rng_next(&rng) & 1;
		o.deep = unit_rng_next(&rng) & 1;
		o.gc = unit_rng_next(&rng) & 1;
		o.gc_grace_s = unit_rng_next(&rng) >> 20;
		o.gc_grace_set = unit_rng_next(&rng) & 1;
		o.skip_namespace = unit_rng_next(&rng) & 1;
		o.jobs = (unsigned)(unit_rng_next(&rng) % (SCRUB_MAX_JOBS + 1));
		o.rate_limit = unit_rng_next(&rng) >> 10;
		o.window = unit_rng_next(&rng) >> 40;
		o.no_resume = unit_rng_next(&rng) & 1;
		int len = control_request_encode(&o, line, sizeof(line));
		ck_assert_int_gt(len, 0);
		ck_assert_int_eq(line[len - 1], '\n');
		line[len - 1] = '\0';
		ck_assert_int_eq(control_request_decode(line, &d), 0);
		ck_assert_mem_eq(&o, &d, sizeof(o));

		/* an event with hostile strings */
		char path[300], key[100], msg[200];
		random_str(path, sizeof(path), &rng);
		random_str(key, sizeof(key), &rng);
		random_str(msg, sizeof(msg), &rng);
		struct scrub_event ev = {
			.kind = (enum scrub_event_kind)(unit_rng_next(&rng) % (SCRUB_EV_NOTICE + 1)),
			.fixed = unit_rng_next(&rng) & 1, .ino = unit_rng_next(&rng), .stripe = unit_rng_next(&rng),
			.index = (int)(unit_rng_next(&rng) % 65) - 1,
			.server = (int)(unit_rng_next(&rng) % 65537) - 1, .off = unit_rng_next(&rng),
			.len = unit_rng_next(&rng), .path = unit_rng_next(&rng) & 1 ? path : NULL,
			.key = unit_rng_next(&rng) & 1 ? key : NULL, .msg = msg };
		len = control_event_encode(&ev, line, sizeof(line));
		ck_assert_int_gt(len, 0);
		ck_assert_ptr_null(memchr(line, '\n', (size_t)len - 1));
		line[len - 1] = '\0';
		ck_assert_int_eq(control_msg_decode(line, &m), 0);
		ck_assert_int_eq(m.kind, CONTROL_MSG_EVENT);
		ck_assert_int_eq(m.ev.kind, ev.kind);
		ck_assert_int_eq(m.ev.fixed, ev.fixed);
		ck_assert_uint_eq(m.ev.ino, ev.ino);
		ck_assert_uint_eq(m.ev.stripe, ev.stripe);
		ck_assert_int_eq(m.ev.index, ev.index);
		ck_assert_int_eq(m.ev.server, ev.server);
		ck_assert_uint_eq(m.ev.off, ev.off);
		ck_assert_uint_eq(m.ev.len, ev.len);
		if (ev.path)
			ck_assert_str_eq(m.ev.path, path);
		else
			ck_assert_ptr_null(m.ev.path);
		if (ev.key)
			ck_assert_str_eq(m.ev.key, key);
		else
			ck_assert_ptr_null(m.ev.key);
		ck_assert_str_eq(m.ev.msg, msg);

		/* progress and stats */
		uint64_t a = unit_rng_next(&rng), b = unit_rng_next(&rng), c = unit_rng_next(&rng);
		len = control_progress_encode(path, a, b, c, line, sizeof(line));
		ck_assert_int_gt(len, 0);
		line[len - 1] = '\0';
		ck_assert_int_eq(control_msg_decode(line, &m), 0);
		ck_assert_int_eq(m.kind, CONTROL_MSG_PROGRESS);
		ck_assert_str_eq(m.phase, path);
		ck_assert(m.done == a && m.total == b && m.bytes == c);
		struct scrub_stats st;
		random_stats(&st, &rng);
		len = control_stats_encode(&st, line, sizeof(line));
		ck_assert_int_gt(len, 0);
		line[len - 1] = '\0';
		ck_assert_int_eq(control_msg_decode(line, &m), 0);
		ck_assert_int_eq(m.kind, CONTROL_MSG_STATS);
		ck_assert_mem_eq(&m.st, &st, sizeof(st));

		/* truncations and random bytes: refused or parsed, never a crash */
		len = control_event_encode(&ev, line, sizeof(line));
		line[len - 1] = '\0';
		for (int cut = 0; cut < len - 1; cut++) {
			memcpy(copy, line, (size_t)cut);
			copy[cut] = '\0';
			(void)control_msg_decode(copy, &m);
		}
		size_t rl = unit_rng_next(&rng) % 200;
		for (size_t i = 0; i < rl; i++) {
			copy[i] = (char)(unit_rng_next(&rng) % 255 + 1);
			if (unit_rng_next(&rng) % 4 == 0)
				copy[i] = " 0123456789-+%"[unit_rng_next(&rng) % 14];
		}
		memcpy(copy, (const char *[]){ "event ", "stats ", "progress ", "hello 1 ",
					       "end ", "error " }[unit_rng_next(&rng) % 6], 4);
		copy[rl < 4 ? 4 : rl] = '\0';
		(void)control_msg_decode(copy, &m);
		(void)control_request_decode(copy, &d);
	}
	/* a small event fits the buffer exactly or not at all */
	struct scrub_event ev = { .kind = SCRUB_EV_NOTICE, .index = -1, .server = -1, .msg = "m" };
	int len = control_event_encode(&ev, line, sizeof(line));
	ck_assert_int_eq(control_event_encode(&ev, line, (size_t)len), -ENOSPC);
	ck_assert_int_eq(control_event_encode(&ev, line, (size_t)len + 1), len);

	char hello[] = "hello 1 01020304-0506-0708-090a-0b0c0d0e0f10 4 2 6";
	ck_assert_int_eq(control_msg_decode(hello, &m), 0);
	ck_assert_int_eq(m.kind, CONTROL_MSG_HELLO);
	ck_assert_str_eq(m.info.fs_uuid, "01020304-0506-0708-090a-0b0c0d0e0f10");
	ck_assert(m.info.k == 4 && m.info.m == 2 && m.info.n_servers == 6);
	char err[] = "error 16 +a%20scrub%20is%20running";
	ck_assert_int_eq(control_msg_decode(err, &m), 0);
	ck_assert_int_eq(m.kind, CONTROL_MSG_ERROR);
	ck_assert_int_eq(m.result, -EBUSY);
	ck_assert_str_eq(m.msg, "a scrub is running");
	char end[] = "end -125";
	ck_assert_int_eq(control_msg_decode(end, &m), 0);
	ck_assert_int_eq(m.result, -ECANCELED);
	char *bad[] = { strdup("hello 2 01020304-0506-0708-090a-0b0c0d0e0f10 4 2 6"),
			strdup("end 1"), strdup("event  1"), strdup("stats x"),
			strdup("progress +a 1 2"), strdup("error 0 +x"), strdup("nope"),
			strdup("event 99 0 1 1 0 0 0 0 - - +m"), strdup("event 1 0 1 1 0 0 0 0 - - -"),
			strdup("progress +a%0 1 2 3"), strdup("progress +a%00 1 2 3") };
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(bad); i++) {
		ck_assert_int_eq(control_msg_decode(bad[i], &m), -EPROTO);
		free(bad[i]);
	}
	struct scrub_options d;
	ck_assert_int_eq(control_request_decode("scrub 2 deep=1", &d), -EPROTO);
	ck_assert_int_eq(control_request_decode("scrub 1 deep=2", &d), -EINVAL);
	ck_assert_int_eq(control_request_decode("scrub 1 bogus=1", &d), -EINVAL);
	ck_assert_int_eq(control_request_decode("scrub 1 jobs=65", &d), -EINVAL);
	ck_assert_int_eq(control_request_decode("scrub 1 deep=1x", &d), -EINVAL);
	ck_assert_int_eq(control_request_decode("scrub 1", &d), 0);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("scrub");
	TCase *tc = tcase_create("stripe_io");

	tcase_add_test(tc, test_seal_check);
	tcase_add_loop_test(tc, test_rebuild_identical, 0, 4);
	tcase_add_test(tc, test_exit_status);
	tcase_add_test(tc, test_checkpoint_codec);
	tcase_add_test(tc, test_control_codec);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	tc = tcase_create("engine");
	tcase_add_test(tc, test_credentials);
	tcase_add_test(tc, test_namespace);
	tcase_add_test(tc, test_namespace_detached);
	tcase_add_test(tc, test_checkpoint_run);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}
