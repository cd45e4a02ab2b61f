/*
 * test_journal: the metadata journal (src/journal) on the in-memory block store: what a restore
 * rebuilds from the servers alone, group commit, fsync failing while too few servers take a
 * segment, and the refusal of an old copy once a later epoch wrote.
 */
#include <pthread.h>

#include "tessera/journal.h"

#include "memfs.h"

static struct journal *J;

static void jstart(struct meta *meta, bool takeover, int want)
{
	struct journal_config cfg = { .interval_ms = 50, .takeover = takeover };
	int r = journal_start(meta, E.bs, &cfg, &J);

	ck_assert_int_eq(r, want);
	if (r < 0)
		J = NULL;
}

/* Inode ino (mode 0644, size = ino * 3) and an xattr "user.n" = "v<ino>", in one commit. */
static void put_inode(struct meta *meta, uint64_t ino, bool sync, int want)
{
	struct meta_batch *b = meta_batch_new(meta);
	struct meta_inode in = { .ino = ino, .mode = S_IFREG | 0644, .nlink = 1, .size = ino * 3 };
	char v[32];

	ck_assert_ptr_nonnull(b);
	meta_batch_inode_put(b, &in);
	snprintf(v, sizeof(v), "v%" PRIu64, ino);
	meta_batch_xattr_put(b, ino, "user.n", 6, v, strlen(v));
	ck_assert_int_eq(meta_commit(meta, b, sync), want);
	meta_batch_free(b);
}

static void expect_inode(struct meta *meta, uint64_t ino)
{
	struct meta_inode in;
	char v[32], want[32];
	size_t len;

	ck_assert_int_eq(meta_inode_get(meta, ino, &in), 0);
	ck_assert_uint_eq(in.size, ino * 3);
	ck_assert_int_eq(meta_xattr_get(meta, ino, "user.n", 6, v, sizeof(v), &len), 0);
	snprintf(want, sizeof(want), "v%" PRIu64, ino);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_int_eq(memcmp(v, want, len), 0);
}

static struct meta *restore_into(const char *name, struct journal_restore_info *info)
{
	uint16_t ids[MEMFS_MAX_SERVERS];
	char dir[256], err[256];
	struct meta *meta;

	for (unsigned i = 0; i < E.n; i++)
		ids[i] = (uint16_t)i;
	snprintf(dir, sizeof(dir), "%s/%s", E.dir, name);
	int r = journal_restore(E.bs, ids, E.n, UUID, dir, info, err, sizeof(err));
	ck_assert_msg(r == 0, "restore: %d: %s", r, err);
	ck_assert_int_eq(meta_open(dir, &meta), 0);
	return meta;
}

/* Everything committed (synced or not) before a clean stop is restored, at the same position;
 * a deleted inode stays deleted. */
START_TEST(restore_roundtrip)
{
	struct journal_restore_info info;
	uint64_t epoch, seq, e2, s2;

	env_up();
	jstart(E.meta, false, 0);
	for (uint64_t ino = 100; ino < 400; ino++)
		put_inode(E.meta, ino, ino % 37 == 0, 0);
	struct meta_batch *b = meta_batch_new(E.meta);
	meta_batch_inode_del(b, 150);
	ck_assert_int_eq(meta_commit(E.meta, b, false), 0);
	meta_batch_free(b);
	journal_stop(J);
	meta_journal_pos(E.meta, &epoch, &seq);
	ck_assert_uint_eq(epoch, 1);
	ck_assert_uint_ge(seq, 301);

	struct meta *r = restore_into("r1", &info);
	meta_journal_pos(r, &e2, &s2);
	ck_assert_uint_eq(e2, epoch);
	ck_assert_uint_eq(s2, seq);
	ck_assert_uint_eq(info.seq, seq);
	for (uint64_t ino = 100; ino < 400; ino++) {
		if (ino == 150)
			ck_assert_int_eq(meta_inode_get(r, ino, &(struct meta_inode){ 0 }), -ENOENT);
		else
			expect_inode(r, ino);
	}
	ck_assert_int_eq(memcmp(meta_superblock(r)->fs_uuid, UUID, 16), 0);
	meta_close(r);
	env_down();
}
END_TEST

struct syncer {
	uint64_t first;
	int fails;
};

static void *syncer_main(void *arg)
{
	struct syncer *s = arg;

	for (uint64_t i = 0; i < 25; i++) {
		struct meta_batch *b = meta_batch_new(E.meta);
		struct meta_inode in = { .ino = s->first + i, .mode = S_IFREG | 0644, .nlink = 1 };
		meta_batch_inode_put(b, &in);
		if (meta_commit(E.meta, b, true) != 0)
			s->fails++;
		meta_batch_free(b);
	}
	return NULL;
}

/* Eight threads fsyncing at once share segments: fewer segments than synced commits. */
START_TEST(group_commit)
{
	struct memstore_faults slow = { .delay_ms = 5 };
	struct syncer sy[8];
	pthread_t t[8];
	struct journal_status st;

	env_up();
	jstart(E.meta, false, 0);
	for (unsigned i = 0; i < E.n; i++)
		ck_assert_int_eq(memstore_set_faults(E.ms, (uint16_t)i, &slow), 0);
	for (int i = 0; i < 8; i++) {
		sy[i] = (struct syncer){ .first = 1000 + (uint64_t)i * 100 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, syncer_main, &sy[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(sy[i].fails, 0);
	}
	journal_status(J, &st);
	ck_assert_uint_ge(st.durable_seq, 200);
	ck_assert_msg(st.segments < 150, "200 synced commits took %" PRIu64 " segments",
		      st.segments);
	ck_assert_uint_eq(st.copies, M + 1);
	journal_stop(J);
	env_down();
}
END_TEST

/* A synced commit fails while fewer servers than the journal needs take its segment (the
 * records are kept); once they are back the next one succeeds and both are restored. */
START_TEST(sync_fails_without_servers)
{
	struct memstore_faults down = { .down = true }, none = { 0 };
	struct journal_restore_info info;

	env_up();
	jstart(E.meta, false, 0);
	put_inode(E.meta, 10, true, 0);
	/* write quorum k+1: a segment needs 2 copies; only one server left */
	for (unsigned i = 1; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &down);
	put_inode(E.meta, 11, true, -EIO);
	for (unsigned i = 1; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &none);
	put_inode(E.meta, 12, true, 0);
	journal_stop(J);
	struct meta *r = restore_into("r", &info);
	expect_inode(r, 10);
	expect_inode(r, 11);
	expect_inode(r, 12);
	meta_close(r);
	env_down();
}
END_TEST

/* An unsynced record whose store failed reaches the servers once they are back, with nothing
 * else committed after it. */
START_TEST(failed_store_retried)
{
	struct memstore_faults down = { .down = true }, none = { 0 };
	struct journal_status st;
	uint64_t epoch, seq;

	env_up();
	jstart(E.meta, false, 0);
	for (unsigned i = 1; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &down);
	put_inode(E.meta, 30, false, 0);
	meta_journal_pos(E.meta, &epoch, &seq);
	usleep(300000); /* the interval (50 ms) passes: at least one store fails */
	journal_status(J, &st);
	ck_assert_uint_lt(st.durable_seq, seq);
	ck_assert_int_ne(st.error, 0);
	for (unsigned i = 1; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &none);
	for (int i = 0; i < 300 && st.durable_seq < seq; i++) {
		usleep(10000);
		journal_status(J, &st);
	}
	ck_assert_uint_ge(st.durable_seq, seq);
	journal_stop(J);
	env_down();
}
END_TEST

/* A flush (close()) and a local sync wait for the WAL only: it succeeds with every server down, while a
 * durable one (fsync) fails; the record reaches the servers once they are back. */
START_TEST(local_sync_without_servers)
{
	struct memstore_faults down = { .down = true }, none = { 0 };
	struct journal_status st;
	uint64_t epoch, seq;

	env_up_inline(4096);
	jstart(E.meta, false, 0);
	uint64_t ino = new_file();
	for (unsigned i = 0; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &down);
	/* close() of a small file: an inline stripe and the size, nothing to store */
	struct data_file *f = open_file(ino);
	ck_assert_int_eq(data_write(f, 0, "small", 5), 5);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	put_inode(E.meta, 40, false, 0);
	ck_assert_int_eq(meta_sync_local(E.meta), 0);
	struct meta_batch *b = meta_batch_new(E.meta);
	meta_batch_inode_put(b, &(struct meta_inode){ .ino = 41, .mode = S_IFREG | 0644, .nlink = 1 });
	ck_assert_int_eq(meta_commit_local(E.meta, b), 0);
	meta_batch_free(b);
	meta_journal_pos(E.meta, &epoch, &seq);
	ck_assert_int_eq(meta_sync(E.meta), -EIO);
	journal_status(J, &st);
	ck_assert_uint_lt(st.durable_seq, seq);
	for (unsigned i = 0; i < E.n; i++)
		memstore_set_faults(E.ms, (uint16_t)i, &none);
	for (int i = 0; i < 1000 && st.durable_seq < seq; i++) {
		usleep(10000);
		journal_status(J, &st);
	}
	ck_assert_uint_ge(st.durable_seq, seq);
	journal_stop(J);
	env_down();
}
END_TEST

/* A restore whose mount wrote a later epoch: the old metadata is refused (-ESTALE), and with
 * takeover it catches up with what the later epoch wrote. */
START_TEST(old_copy_refused)
{
	struct journal_restore_info info;
	uint64_t epoch, seq;

	env_up();
	jstart(E.meta, false, 0);
	put_inode(E.meta, 20, true, 0);
	journal_stop(J);
	struct meta *r = restore_into("r", &info);
	jstart(r, false, 0);
	put_inode(r, 21, true, 0);
	journal_stop(J);
	meta_journal_pos(r, &epoch, &seq);
	ck_assert_uint_eq(epoch, 2);
	meta_close(r);

	jstart(E.meta, false, -ESTALE);
	ck_assert_int_eq(meta_inode_get(E.meta, 21, &(struct meta_inode){ 0 }), -ENOENT);
	jstart(E.meta, true, 0);
	expect_inode(E.meta, 21);
	journal_stop(J);
	meta_journal_pos(E.meta, &epoch, &seq);
	ck_assert_uint_eq(epoch, 3);
	env_down();
}
END_TEST

/* A later checkpoint deletes the segments it covers; the restore still has everything. */
START_TEST(checkpoint_collects)
{
	struct journal_restore_info info;
	struct journal_config cfg = { .interval_ms = 20, .checkpoint_bytes = 4096 };

	env_up();
	ck_assert_int_eq(journal_start(E.meta, E.bs, &cfg, &J), 0);
	for (uint64_t ino = 100; ino < 300; ino++)
		put_inode(E.meta, ino, true, 0);
	/* the checkpointer runs in the background: give it a moment after the last commit */
	struct journal_status st;
	for (int i = 0; i < 200; i++) {
		journal_status(J, &st);
		if (st.ckpt_seq > 100)
			break;
		usleep(10000);
	}
	ck_assert_uint_gt(st.ckpt_seq, 100);
	journal_stop(J);
	long segs = 0;
	for (unsigned i = 0; i < E.n; i++)
		segs += memstore_count(E.ms, (uint16_t)i, "512c9e04-7b33-4a10-8f61-22d70ce5934b/journal/seg-");
	ck_assert_msg(segs < 200 * (M + 1), "%ld segment objects left", segs);
	struct meta *r = restore_into("r", &info);
	ck_assert_uint_gt(info.ckpt_seq, 100);
	for (uint64_t ino = 100; ino < 300; ino++)
		expect_inode(r, ino);
	meta_close(r);
	env_down();
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("journal");

	tcase_add_test(tc, restore_roundtrip);
	tcase_add_test(tc, group_commit);
	tcase_add_test(tc, sync_fails_without_servers);
	tcase_add_test(tc, failed_store_retried);
	tcase_add_test(tc, local_sync_without_servers);
	tcase_add_test(tc, old_copy_refused);
	tcase_add_test(tc, checkpoint_collects);
	suite_add_tcase(s, tc);
	return s;
}
