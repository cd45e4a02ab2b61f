/*
 * Unit tests of the scrubber's verify and repair rules (src/scrub/scrub.c R1-R6) and its
 * garbage collection, in process: files are written by the real data path onto the in-memory
 * block store (memfs.h), damaged there, then scrubbed.
 *  - a missing fragment is rebuilt byte for byte as it was, under the same key, on the same
 *    server, and a second run finds nothing (R1);
 *  - a payload corrupted at rest is found by --deep only, and rebuilt identical (R1);
 *  - a stripe stored degraded (a server was down) gets its missing fragment once the server is
 *    back, and loses its degraded flag (R6);
 *  - a retired server's fragments move to servers that hold nothing of the stripe, stored
 *    there before the map names them (R2, R4), with zones honoured as a write honours them;
 *  - fewer than k good fragments: reported lost with its byte range, nothing written (R5);
 *  - a writer that rewrites a stripe while its repair runs keeps its new version (R6);
 *  - --gc drains the garbage queue and deletes an unreferenced fragment of ours, never a live
 *    one and never another filesystem's object.
 * Randomised data: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include "memfs.h"

#include <stdatomic.h>

#include "tessera/scrub.h"

#define N6 (K + M)

struct counts {
	unsigned lost_events;
	uint64_t lost_off, lost_len;
};

static void on_event(void *ctx, const struct scrub_event *ev)
{
	struct counts *c = ctx;

	if (ev->kind == SCRUB_EV_STRIPE_LOST) {
		c->lost_events++;
		c->lost_off = ev->off;
		c->lost_len = ev->len;
	}
}

static struct scrub_stats scrub_with(struct scrub_options *opt, struct counts *c)
{
	struct scrub_stats st;
	struct scrub *s;

	opt->on_event = on_event;
	opt->ctx = c;
	if (!opt->jobs)
		opt->jobs = 4;
	ck_assert_int_eq(scrub_new(E.meta, E.bs, opt, &s), 0);
	ck_assert_int_eq(scrub_run(s, &st), 0);
	scrub_free(s);
	return st;
}

static struct scrub_stats scrub_plain(bool deep)
{
	struct scrub_options opt = { .deep = deep, .meta_lock = &E.lock };
	struct counts c = { 0 };

	return scrub_with(&opt, &c);
}

/* The whole stored object of fragment i of a stripe. */
static size_t get_frag(uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, unsigned i,
		       uint8_t *buf, size_t size)
{
	char key[PROTO_KEY_MAX];
	size_t n = 0;

	frag_key(key, ino, stripe, rec->version, i);
	ck_assert_int_eq(memstore_get(E.ms, rec->servers[i], key, buf, size, &n), 0);
	ck_assert_uint_le(n, size);
	return n;
}

START_TEST(test_missing_rebuilt_identical)
{
	const size_t osize = PROTO_FRAG_HDR_SIZE + S / K;
	uint8_t *buf, *before = malloc(osize), *after = malloc(osize);
	char key[PROTO_KEY_MAX];
	uint64_t ino;

	env_up();
	ino = stored_file(2 * S, 1, &buf);
	data_free(E.d);
	E.d = NULL;
	struct meta_stripe rec = stripe_rec(ino, 1);
	unsigned idx = (unsigned)(_i % N6); /* data and parity fragments alike */
	size_t n = get_frag(ino, 1, &rec, idx, before, osize);
	frag_key(key, ino, 1, rec.version, idx);
	ck_assert_int_eq(memstore_delete(E.ms, rec.servers[idx], key), 0);

	struct scrub_stats st = scrub_plain(false);
	ck_assert_uint_eq(st.frags_missing, 1);
	ck_assert_uint_eq(st.frags_rebuilt, 1);
	ck_assert_uint_eq(st.stripes_repaired, 1);
	struct meta_stripe now = stripe_rec(ino, 1);
	ck_assert_uint_eq(now.version, rec.version);              /* same version: same key */
	ck_assert_uint_eq(now.servers[idx], rec.servers[idx]);    /* back where it was */
	ck_assert_uint_eq(get_frag(ino, 1, &now, idx, after, osize), n);
	ck_assert(memcmp(before, after, n) == 0);                 /* byte for byte (R1) */
	st = scrub_plain(true);
	ck_assert_uint_eq(st.errors_left + st.errors_fixed + st.frags_rebuilt, 0);
	free(after);
	free(before);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_corrupt_payload_needs_deep)
{
	const size_t osize = PROTO_FRAG_HDR_SIZE + S / K;
	uint8_t *buf, *before = malloc(osize), *after = malloc(osize);
	char key[PROTO_KEY_MAX];
	uint64_t ino;

	env_up();
	ino = stored_file(S, 2, &buf);
	data_free(E.d);
	E.d = NULL;
	struct meta_stripe rec = stripe_rec(ino, 0);
	size_t n = get_frag(ino, 0, &rec, 2, before, osize);
	frag_key(key, ino, 0, rec.version, 2);
	ck_assert_int_eq(memstore_corrupt(E.ms, rec.servers[2], key, PROTO_FRAG_HDR_SIZE + 999), 0);
	struct scrub_stats st = scrub_plain(false); /* HEAD and header only */
	ck_assert_uint_eq(st.frags_corrupt, 0);
	st = scrub_plain(true);
	ck_assert_uint_eq(st.frags_corrupt, 1);
	ck_assert_uint_eq(st.frags_rebuilt, 1);
	ck_assert_uint_eq(get_frag(ino, 0, &rec, 2, after, osize), n);
	ck_assert(memcmp(before, after, n) == 0);
	free(after);
	free(before);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_degraded_completed)
{
	uint8_t *buf;
	uint64_t ino;

	env_up();
	set_down(5, true);
	ino = stored_file(S, 3, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	ck_assert(rec.flags & META_STRIPE_F_DEGRADED);
	ck_assert_uint_eq(popcount(rec.present), N6 - 1);
	data_free(E.d);
	E.d = NULL;
	/* While server 5 is down the fragment cannot go back there, and no other server is free
	 * of this stripe: unreachable, not lost. */
	set_down(5, false);
	struct scrub_stats st = scrub_plain(false);
	ck_assert_uint_eq(st.frags_rebuilt, 1);
	struct meta_stripe now = stripe_rec(ino, 0);
	ck_assert_uint_eq(now.present, (1u << N6) - 1);
	ck_assert(!(now.flags & META_STRIPE_F_DEGRADED));
	for (unsigned i = 0; i < N6; i++)
		for (unsigned j = i + 1; j < N6; j++)
			ck_assert_uint_ne(now.servers[i], now.servers[j]); /* R4 */
	expect_content(ino, 0, buf, S);
	free(buf);
	env_down();
}
END_TEST

/* Retires server id in the superblock (what `tessera server remove` does). */
static void retire(uint16_t id)
{
	struct meta_superblock *sb = malloc(sizeof(*sb));

	memcpy(sb, meta_superblock(E.meta), sizeof(*sb));
	for (uint32_t i = 0; i < sb->n_servers; i++)
		if (sb->servers[i].id == id)
			sb->servers[i].flags |= META_SERVER_F_RETIRED;
	ck_assert_int_eq(meta_superblock_update(E.meta, sb), 0);
	free(sb);
}

START_TEST(test_retired_server_moved_within_zones)
{
	/* Three zones of three servers: at most m = 2 fragments of a stripe per zone. */
	static const char *const zones[9] = { "a", "a", "a", "b", "b", "b", "c", "c", "c" };
	uint8_t *buf;
	uint64_t ino;
	const unsigned stripes = 12;

	env_up_with(9, zones, 0);
	ino = stored_file(stripes * S, 4, &buf);
	data_free(E.d);
	E.d = NULL;
	unsigned on_retired = 0;
	for (uint64_t s = 0; s < stripes; s++) {
		struct meta_stripe rec = stripe_rec(ino, s);
		for (unsigned i = 0; i < N6; i++)
			on_retired += rec.servers[i] == 4;
	}
	ck_assert_uint_gt(on_retired, 0);
	retire(4);
	struct scrub_stats st = scrub_plain(false);
	ck_assert_uint_eq(st.frags_moved, on_retired);
	for (uint64_t s = 0; s < stripes; s++) {
		struct meta_stripe rec = stripe_rec(ino, s);
		unsigned per_zone[3] = { 0 };
		ck_assert_uint_eq(rec.present, (1u << N6) - 1);
		for (unsigned i = 0; i < N6; i++) {
			ck_assert_uint_ne(rec.servers[i], 4);
			per_zone[rec.servers[i] / 3]++;
			for (unsigned j = i + 1; j < N6; j++)
				ck_assert_uint_ne(rec.servers[i], rec.servers[j]);
		}
		for (unsigned z = 0; z < 3; z++)
			ck_assert_uint_le(per_zone[z], M);
	}
	/* The data path reads what was moved, with the retired server gone entirely. */
	set_down(4, true);
	expect_content(ino, 0, buf, stripes * S);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_lost_stripe_reported_nothing_written)
{
	char key[PROTO_KEY_MAX];
	struct scrub_options opt = { .meta_lock = &E.lock };
	struct counts c = { 0 };
	uint8_t *buf;
	uint64_t ino;

	env_up();
	ino = stored_file(3 * S, 5, &buf);
	data_free(E.d);
	E.d = NULL;
	struct meta_stripe rec = stripe_rec(ino, 1);
	for (unsigned i = 0; i < M + 1; i++) {
		frag_key(key, ino, 1, rec.version, i);
		ck_assert_int_eq(memstore_delete(E.ms, rec.servers[i], key), 0);
	}
	uint64_t puts = memstore_requests(E.ms, BC_PUT);
	struct scrub_stats st = scrub_with(&opt, &c);
	ck_assert_uint_eq(st.stripes_lost, 1);
	ck_assert_uint_eq(c.lost_events, 1);
	ck_assert_uint_eq(c.lost_off, S);
	ck_assert_uint_eq(c.lost_len, S);
	ck_assert_uint_eq(memstore_requests(E.ms, BC_PUT), puts); /* R5 */
	ck_assert_int_eq(scrub_exit_status(&st, 0) & SCRUB_EXIT_LEFT, SCRUB_EXIT_LEFT);
	free(buf);
	env_down();
}
END_TEST

/* The first PUT of a rebuilt fragment rewrites the stripe through the data path first, as a
 * writer racing the repair would. */
struct race {
	uint64_t ino;
	uint8_t *patch;
	atomic_int fired;
	int flush_result;
};

static int race_hook(void *arg, const struct blockclient_op *op)
{
	struct race *r = arg;
	int expected = 0;

	if (op->method != BC_PUT || !atomic_compare_exchange_strong(&r->fired, &expected, 1))
		return 0;
	struct data_file *f;
	ck_assert_int_eq(data_open(E.d, r->ino, inode_size(r->ino), &f), 0);
	write_all(f, 0, r->patch, 8192);
	r->flush_result = data_flush(f);
	data_close(E.d, f, NULL);
	return 0;
}

START_TEST(test_writer_racing_repair_keeps_its_write)
{
	char key[PROTO_KEY_MAX];
	uint8_t *buf;
	uint64_t ino;

	env_up();
	ino = stored_file(S, 6, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	frag_key(key, ino, 0, rec.version, 1);
	ck_assert_int_eq(memstore_delete(E.ms, rec.servers[1], key), 0);
	struct race r = { .ino = ino, .patch = random_bytes(8192, 7) };
	memstore_set_hook(E.ms, race_hook, &r);
	struct scrub_stats st = scrub_plain(false);
	memstore_set_hook(E.ms, NULL, NULL);
	ck_assert_int_eq(atomic_load(&r.fired), 1);
	ck_assert_int_eq(r.flush_result, 0);
	struct meta_stripe now = stripe_rec(ino, 0);
	ck_assert_uint_gt(now.version, rec.version); /* the writer's version stands (R6) */
	ck_assert_uint_eq(now.present, (1u << N6) - 1);
	ck_assert_uint_eq(st.stripes_repaired, 0);
	st = scrub_plain(true); /* and its map is intact: nothing of the old version in it */
	ck_assert_uint_eq(st.frags_corrupt + st.frags_missing + st.errors_left, 0);
	memcpy(buf, r.patch, 8192);
	expect_content(ino, 0, buf, S);
	free(r.patch);
	free(buf);
	env_down();
}
END_TEST

static int fail_deletes(void *arg, const struct blockclient_op *op)
{
	(void)arg;
	return op->method == BC_DELETE ? -EIO : 0;
}

START_TEST(test_gc_collects_only_ours_unreferenced)
{
	static const uint8_t other[16] = { 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9 };
	char stray[PROTO_KEY_MAX], foreign[PROTO_KEY_MAX];
	uint8_t *buf, hdr[PROTO_FRAG_HDR_SIZE + 16] = { 0 }, tmp[8];
	size_t n;
	uint64_t ino;

	env_up();
	ino = stored_file(2 * S, 8, &buf);
	/* An overwrite leaves the old version on the garbage queue; the daemon's garbage thread
	 * cannot delete it while DELETEs fail. */
	memstore_set_hook(E.ms, fail_deletes, NULL);
	struct data_file *f = open_file(ino);
	write_all(f, 0, buf + 1, 4096);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	data_gc_kick(E.d);
	data_free(E.d);
	E.d = NULL;
	memstore_set_hook(E.ms, NULL, NULL);
	frag_key(stray, ino, 7, 12345, 0); /* our key, referenced by no map */
	ck_assert_int_eq(memstore_put(E.ms, 0, stray, hdr, sizeof(hdr)), 0);
	ck_assert_int_gt(proto_frag_key(foreign, sizeof(foreign), other, ino, 0, 1, 0), 0);
	ck_assert_int_eq(memstore_put(E.ms, 0, foreign, hdr, sizeof(hdr)), 0);
	long live = objects_of(ino) - 1 - N6; /* minus the stray and the old version */

	struct scrub_options opt = { .gc = true, .gc_grace_set = true, .gc_grace_s = 0,
				     .meta_lock = &E.lock };
	struct counts c = { 0 };
	struct scrub_stats st = scrub_with(&opt, &c);
	ck_assert_uint_eq(st.garbage_drained, N6);
	ck_assert_uint_eq(st.gc_deleted, 1);
	ck_assert_int_eq(memstore_get(E.ms, 0, stray, tmp, sizeof(tmp), &n), -ENOENT);
	ck_assert_int_eq(memstore_get(E.ms, 0, foreign, tmp, sizeof(tmp), &n), 0);
	ck_assert_int_eq(objects_of(ino), live);
	memmove(buf, buf + 1, 4096);
	expect_content(ino, 0, buf, 2 * S);
	free(buf);
	env_down();
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("repair");
	TCase *tc = tcase_create("memstore");

	tcase_add_loop_test(tc, test_missing_rebuilt_identical, 0, N6);
	tcase_add_test(tc, test_corrupt_payload_needs_deep);
	tcase_add_test(tc, test_degraded_completed);
	tcase_add_test(tc, test_retired_server_moved_within_zones);
	tcase_add_test(tc, test_lost_stripe_reported_nothing_written);
	tcase_add_test(tc, test_writer_racing_repair_keeps_its_write);
	tcase_add_test(tc, test_gc_collects_only_ours_unreferenced);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}
