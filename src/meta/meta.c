/*
 * meta: the metadata store, on RocksDB's C API.
 *
 * meta.c owns the database handle, its column families and options (open, close, backup,
 * the orphan index, bulk deletion); meta_read.c turns the module's reads into RocksDB gets
 * and iterators, meta_batch.c its changes into WriteBatches; meta_db.h is what they share. It does not decide what a namespace
 * operation writes (the fs and data layers build the batches) and it does not lock across a
 * read-check-write sequence: callers that need one hold their own lock. Key and record layouts
 * are in meta_record.c. RocksDB's error strings (char *err) are seen only here: they are logged
 * at debug level and become -EIO (or -EBUSY for a held LOCK).
 *
 * Threads and locks: struct meta is read-only after meta_open() except
 *   - ino_next/ino_limit, protected by ino_lock (meta_alloc_ino());
 *   - garbage_seq, an atomic counter (meta_batch_garbage_add()).
 * RocksDB itself is thread-safe for concurrent gets, iterators and writes. A struct meta_batch
 * belongs to one thread.
 *
 * Design notes: durability invariants
 *
 *   1. Every change is one WriteBatch applied by meta_commit(): RocksDB's WAL makes it atomic,
 *      so a crash leaves the state before or after the batch, never part of it.
 *   2. meta_commit(sync = true) and meta_sync() return only after the WAL is fsync'ed; the data
 *      layer calls one of them before it reports fsync()/close() success. Unsynced commits may
 *      be lost in a crash, but only whole, and only the most recent ones (WAL order).
 *   3. An inode number is never handed out twice, also across a crash: meta_alloc_ino() first
 *      persists (synced) a limit ino_limit, then hands out numbers below it from memory. At
 *      open ino_next = ino_limit = the persisted value, so every number handed out before a
 *      crash is below every number handed out after it.
 *   4. Garbage sequence numbers only grow while the store is open; at open the counter starts
 *      past the last key still queued. A number may be reused after every entry above it was
 *      deleted, which is harmless: the queue is ordered, never referenced by number elsewhere.
 *   5. meta_mkfs() writes superblock, root inode and inode counter in one synced batch: a
 *      crash during mkfs leaves no superblock, which meta_open() reports as -ENOENT.
 *   6. Decoded records are checked before use (meta_record.c); a damaged record is -EIO to the
 *      caller (-EBADMSG for the superblock at open), never a wrong stripe map.
 *   7. The orphan index ("orphan" + ino in the system family) is written in the same batches
 *      as the inode records it describes (meta_batch_orphan_put/del, by the fs layer), so by
 *      invariant 1 every inode a crash left with nlink 0 is in it and meta_orphan_list()
 *      finds it without reading the inode table.
 */
#include "meta_db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/common.h"

/* Consumes a RocksDB error string; the one place where they are translated. */
int meta_err(char *err, const char *what)
{
	int r = -EIO;

	if (strstr(err, "While lock file") || strstr(err, "lock hold by current process") ||
	    strstr(err, "Resource temporarily unavailable"))
		r = -EBUSY;
	tlog_debug("meta: %s: %s", what, err);
	rocksdb_free(err);
	return r;
}

/* ---- options ---- */

struct meta_opts {
	rocksdb_options_t *db;
	rocksdb_options_t *cf[CF_COUNT];
};

static void opts_release(struct meta_opts *o)
{
	for (int i = 0; i < CF_COUNT; i++)
		if (o->cf[i])
			rocksdb_options_destroy(o->cf[i]);
	if (o->db)
		rocksdb_options_destroy(o->db);
	memset(o, 0, sizeof(*o));
}

static rocksdb_block_based_table_options_t *table_opts_new(rocksdb_cache_t *cache, bool bloom)
{
	rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();

	rocksdb_block_based_options_set_block_cache(t, cache);
	if (bloom) /* takes ownership of the policy */
		rocksdb_block_based_options_set_filter_policy(
			t, rocksdb_filterpolicy_create_bloom_full(META_BLOOM_BITS));
	return t;
}

static void cf_tune(rocksdb_options_t *o, rocksdb_block_based_table_options_t *t)
{
	rocksdb_options_set_block_based_table_factory(o, t); /* copies t */
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
}

/* Database and per-family options. create: mkfs (create the database, fail if it exists). */
static void opts_init(struct meta_opts *o, rocksdb_cache_t *cache, bool create)
{
	rocksdb_block_based_table_options_t *plain = table_opts_new(cache, false);
	rocksdb_block_based_table_options_t *bloom = table_opts_new(cache, true);

	o->db = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o->db, create);
	rocksdb_options_set_error_if_exists(o->db, create);
	rocksdb_options_set_create_missing_column_families(o->db, 1);
	rocksdb_options_set_paranoid_checks(o->db, 1);
	rocksdb_options_increase_parallelism(o->db, 2);
	rocksdb_options_set_keep_log_file_num(o->db, 4);
	rocksdb_options_set_max_log_file_size(o->db, 1u << 20);
	cf_tune(o->db, plain);
	for (int i = 0; i < CF_COUNT; i++) {
		o->cf[i] = rocksdb_options_create();
		cf_tune(o->cf[i], i == CF_INODES || i == CF_DENTRIES ? bloom : plain);
	}
	rocksdb_block_based_options_destroy(plain);
	rocksdb_block_based_options_destroy(bloom);
}

/* ---- open / close ---- */

/* 1 when dir holds a RocksDB database (its CURRENT file), 0 when not, -errno. */
static int db_exists(const char *dir)
{
	char path[4096];
	struct stat st;

	if (snprintf(path, sizeof(path), "%s/CURRENT", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (stat(path, &st) == 0)
		return 1;
	return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
}

void meta_close(struct meta *m)
{
	if (!m)
		return;
	for (int i = 0; i < CF_COUNT; i++)
		if (m->cf[i])
			rocksdb_column_family_handle_destroy(m->cf[i]);
	if (m->db)
		rocksdb_close(m->db);
	if (m->cache)
		rocksdb_cache_destroy(m->cache);
	if (m->ro)
		rocksdb_readoptions_destroy(m->ro);
	if (m->wo)
		rocksdb_writeoptions_destroy(m->wo);
	if (m->wo_sync)
		rocksdb_writeoptions_destroy(m->wo_sync);
	pthread_mutex_destroy(&m->ino_lock);
	pthread_mutex_destroy(&m->jlock);
	free(m->dir);
	free(m);
}

/* Opens the database with every column family; no superblock checks. read_only: RocksDB's
 * read-only mode (no LOCK taken, no writes; a view of the moment of opening). */
static int db_open(const char *dir, bool create, bool read_only, struct meta **ret)
{
	struct meta_opts o = { 0 };
	struct meta *m;
	char *err = NULL;
	int r = 0;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->ino_lock, NULL);
	pthread_mutex_init(&m->jlock, NULL);
	m->dir = strdup(dir);
	if (!m->dir) {
		r = -ENOMEM;
		goto out;
	}
	m->cache = rocksdb_cache_create_lru(META_CACHE_BYTES);
	opts_init(&o, m->cache, create);
	if (read_only)
		m->db = rocksdb_open_for_read_only_column_families(
			o.db, dir, CF_COUNT, cf_names, (const rocksdb_options_t *const *)o.cf, m->cf,
			0, &err);
	else
		m->db = rocksdb_open_column_families(o.db, dir, CF_COUNT, cf_names,
						     (const rocksdb_options_t *const *)o.cf, m->cf,
						     &err);
	if (err) {
		m->db = NULL;
		memset(m->cf, 0, sizeof(m->cf));
		r = meta_err(err, "open");
		goto out;
	}
	m->ro = rocksdb_readoptions_create();
	m->wo = rocksdb_writeoptions_create();
	m->wo_sync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(m->wo_sync, 1);
out:
	opts_release(&o);
	if (r < 0) {
		meta_close(m);
		return r;
	}
	*ret = m;
	return 0;
}

/* Reads key of column family cf. Returns 0 and *ret (destroy with
 * rocksdb_pinnableslice_destroy()), -ENOENT, -EIO. */
int meta_db_get(struct meta *m, int cf, const void *key, size_t klen,
		rocksdb_pinnableslice_t **ret)
{
	rocksdb_pinnableslice_t *v;
	char *err = NULL;

	v = rocksdb_get_pinned_cf(m->db, m->ro, m->cf[cf], key, klen, &err);
	if (err)
		return meta_err(err, "get");
	if (!v)
		return -ENOENT;
	*ret = v;
	return 0;
}

const uint8_t *meta_slice_value(const rocksdb_pinnableslice_t *v, size_t *len)
{
	return (const uint8_t *)rocksdb_pinnableslice_value(v, len);
}

/* Iterates column family cf from start (NULL: the first key), skipping the key equal to
 * start when skip_start, while keys begin with the 8-byte prefix (NULL: to the end).
 * Returns 0, the callback's negative value, or -EIO. */
int meta_db_scan(struct meta *m, int cf, const uint8_t *prefix, const uint8_t *start,
		 size_t slen, bool skip_start, scan_fn fn, void *ctx)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it;
	uint8_t bound[8];
	char *err = NULL;
	int r = 0;

	if (prefix && be_get64(prefix) != UINT64_MAX) {
		/* lets RocksDB stop at the prefix end without reading past tombstones */
		be_put64(bound, be_get64(prefix) + 1);
		rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)bound, sizeof(bound));
	}
	it = rocksdb_create_iterator_cf(m->db, ro, m->cf[cf]);
	if (start)
		rocksdb_iter_seek(it, (const char *)start, slen);
	else
		rocksdb_iter_seek_to_first(it);
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		const uint8_t *v;

		if (prefix && (klen < 8 || memcmp(k, prefix, 8) != 0))
			break;
		if (skip_start && klen == slen && memcmp(k, start, slen) == 0)
			continue;
		v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		r = fn(ctx, k, klen, v, vlen);
		if (r != 0)
			break;
	}
	if (r == 0) {
		rocksdb_iter_get_error(it, &err);
		if (err)
			r = meta_err(err, "iterate");
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return r > 0 ? 0 : r;
}

static int load_superblock(struct meta *m)
{
	rocksdb_pinnableslice_t *v = NULL;
	const uint8_t *p;
	size_t len;
	int r;

	r = meta_db_get(m, CF_SYSTEM, META_KEY_SUPERBLOCK, strlen(META_KEY_SUPERBLOCK), &v);
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	r = meta_superblock_decode(p, len, &m->sb);
	if (r < 0) {
		tlog_debug("meta: superblock of '%s' does not decode", m->dir);
		goto out;
	}
	if (m->sb.format_version != META_FORMAT_VERSION) {
		tlog_debug("meta: '%s' has format version %u, this build knows %u", m->dir,
			   m->sb.format_version, META_FORMAT_VERSION);
		r = -EBADMSG;
	}
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

static int load_ino_counter(struct meta *m)
{
	rocksdb_pinnableslice_t *v = NULL;
	const uint8_t *p;
	size_t len;
	int r;

	r = meta_db_get(m, CF_SYSTEM, META_KEY_NEXT_INO, strlen(META_KEY_NEXT_INO), &v);
	if (r == -ENOENT)
		r = -EBADMSG;
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	if (len != 8 || be_get64(p) <= META_ROOT_INO) {
		r = -EBADMSG;
		goto out;
	}
	m->ino_next = m->ino_limit = be_get64(p);
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

static int load_garbage_seq(struct meta *m)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(m->db, m->ro, m->cf[CF_GARBAGE]);
	uint64_t seq = 1;
	char *err = NULL;
	int r = 0;

	rocksdb_iter_seek_to_last(it);
	if (rocksdb_iter_valid(it)) {
		size_t klen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);

		if (klen != 8 || be_get64(k) == UINT64_MAX) {
			r = -EBADMSG;
			goto out;
		}
		seq = be_get64(k) + 1;
	}
	rocksdb_iter_get_error(it, &err);
	if (err) {
		r = meta_err(err, "garbage seek");
		goto out;
	}
	atomic_store(&m->garbage_seq, seq);
out:
	rocksdb_iter_destroy(it);
	return r;
}

static int open_existing(const char *dir, bool read_only, struct meta **ret)
{
	struct meta *m = NULL;
	int r;

	r = db_exists(dir);
	if (r == 0)
		r = -ENOENT;
	if (r < 0)
		return r;
	r = db_open(dir, false, read_only, &m);
	if (r < 0)
		return r;
	r = load_superblock(m);
	if (r == 0)
		r = meta_journal_load(m);
	if (r < 0 || read_only)
		goto out;
	r = load_ino_counter(m);
	if (r < 0)
		goto out;
	r = load_garbage_seq(m);
out:
	if (r < 0) {
		meta_close(m);
		return r;
	}
	*ret = m;
	return 0;
}

int meta_create_empty(const char *dir, struct meta **ret)
{
	int r = db_exists(dir);

	if (r > 0)
		return -EEXIST;
	if (r < 0)
		return r;
	r = tmkdir_p(dir, 0700);
	return r < 0 ? r : db_open(dir, true, false, ret);
}

int meta_open(const char *dir, struct meta **ret)
{
	return open_existing(dir, false, ret);
}

int meta_open_read_only(const char *dir, struct meta **ret)
{
	return open_existing(dir, true, ret);
}

const struct meta_superblock *meta_superblock(const struct meta *m)
{
	return &m->sb;
}

/* Whether next keeps what the stored data depends on, and every server id of cur. */
static bool superblock_compatible(const struct meta_superblock *cur,
				  const struct meta_superblock *next)
{
	if (next->format_version != cur->format_version ||
	    memcmp(next->fs_uuid, cur->fs_uuid, 16) != 0 || next->k != cur->k ||
	    next->m != cur->m || next->stripe_size != cur->stripe_size ||
	    next->create_time_ns != cur->create_time_ns || strcmp(next->bucket, cur->bucket) != 0)
		return false;
	for (uint32_t i = 0; i < cur->n_servers; i++)
		if (!meta_server_find(next, cur->servers[i].id))
			return false;
	return true;
}

int meta_superblock_update(struct meta *m, const struct meta_superblock *sb)
{
	struct meta_batch *b;
	uint8_t *buf;
	size_t len;
	int r = 0;

	if (!superblock_compatible(&m->sb, sb))
		return -EINVAL;
	buf = malloc(META_SUPERBLOCK_ENC_MAX);
	if (!buf)
		return -ENOMEM;
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	if (len == 0 || len > META_SUPERBLOCK_ENC_MAX) {
		r = -EINVAL;
		goto out;
	}
	b = meta_batch_new(m);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	meta_batch_put(b, CF_SYSTEM, META_KEY_SUPERBLOCK, strlen(META_KEY_SUPERBLOCK), buf, len);
	r = meta_commit(m, b, true);
	meta_batch_free(b);
	if (r < 0)
		goto out;
	memcpy(&m->sb, sb, sizeof(*sb));
out:
	free(buf);
	return r;
}

/* fsyncs every regular file directly in dir, then dir. */
static int sync_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	if (!d)
		return -errno;
	while (r == 0 && (de = readdir(d))) {
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			if (errno != ELOOP && errno != EISDIR)
				r = -errno;
			continue;
		}
		if (fsync(fd) < 0)
			r = -errno;
		close(fd);
	}
	closedir(d);
	return r ? r : tfsync_dir(dir);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Removes a failed backup's temporary directory (it holds what this process made). */
static void remove_tree(const char *dir)
{
	nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int meta_backup(struct meta *m, const char *dest)
{
	rocksdb_checkpoint_t *cp = NULL;
	char tmp[4096], path[4096], parent[4096];
	const char *cred = NULL;
	char *err = NULL, *buf = NULL, *slash;
	struct stat st;
	size_t len;
	int r;

	if (snprintf(tmp, sizeof(tmp), "%s.partial-%d", dest, (int)getpid()) >= (int)sizeof(tmp) ||
	    snprintf(parent, sizeof(parent), "%s", dest) >= (int)sizeof(parent))
		return -ENAMETOOLONG;
	if (lstat(dest, &st) == 0)
		return -EEXIST;
	if (errno != ENOENT)
		return -errno;
	slash = strrchr(parent, '/');
	if (slash == parent)
		parent[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(parent, ".");
	if (stat(parent, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;

	cp = rocksdb_checkpoint_object_create(m->db, &err);
	if (err)
		return meta_err(err, "checkpoint");
	/* log_size_for_flush 0: the memtables are flushed, so the copy needs no WAL replay */
	rocksdb_checkpoint_create(cp, tmp, 0, &err);
	rocksdb_checkpoint_object_destroy(cp);
	if (err) {
		r = meta_err(err, "checkpoint");
		goto fail;
	}
	/* a key file named relative to the metadata directory travels with it (not one that
	 * climbs out of it with "..") */
	if (strncmp(m->sb.credentials, "file:", 5) == 0 && m->sb.credentials[5] != '/' &&
	    !strstr(m->sb.credentials + 5, ".."))
		cred = m->sb.credentials + 5;
	if (cred && *cred) {
		if (snprintf(path, sizeof(path), "%s/%s", m->dir, cred) >= (int)sizeof(path)) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		r = tfile_read_all(path, 4096, &buf, &len);
		if (r == 0)
			r = snprintf(path, sizeof(path), "%s/%s", tmp, cred) < (int)sizeof(path)
				    ? 0
				    : -ENAMETOOLONG;
		if (r == 0 && (slash = strrchr(path, '/')) && slash > path + strlen(tmp)) {
			*slash = '\0';
			r = tmkdir_p(path, 0700);
			*slash = '/';
		}
		if (r == 0)
			r = tfile_write_atomic(path, buf, len, 0600);
		if (buf)
			memset(buf, 0, len);
		free(buf);
		if (r < 0 && r != -ENOENT)
			goto fail;
	}
	r = sync_tree(tmp);
	if (r < 0)
		goto fail;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) < 0) {
		r = -errno;
		goto fail;
	}
	return tfsync_dir(parent);
fail:
	remove_tree(tmp);
	return r;
}

const char *meta_dir(const struct meta *m)
{
	return m->dir;
}

int meta_mkfs(const char *dir, const struct meta_superblock *sb, uint32_t root_uid,
	      uint32_t root_gid, bool force)
{
	struct meta_opts o = { 0 };
	struct meta *m = NULL;
	struct meta_batch *b = NULL;
	struct meta_inode root = { 0 };
	uint8_t *sbuf, next[8];
	uint64_t now = tclock_realtime_ns();
	char *err = NULL;
	size_t len;
	int r;

	sbuf = malloc(META_SUPERBLOCK_ENC_MAX);
	if (!sbuf)
		return -ENOMEM;
	len = meta_superblock_encode(sb, sbuf, META_SUPERBLOCK_ENC_MAX);
	if (len == 0 || sb->format_version != META_FORMAT_VERSION) {
		r = -EINVAL;
		goto out;
	}
	r = tmkdir_p(dir, 0700);
	if (r < 0)
		goto out;
	r = db_exists(dir);
	if (r < 0)
		goto out;
	if (r > 0 && !force) {
		r = -EEXIST;
		goto out;
	}
	if (r > 0) {
		/* fails on the LOCK when the old filesystem is in use */
		o.db = rocksdb_options_create();
		rocksdb_destroy_db(o.db, dir, &err);
		if (err) {
			r = meta_err(err, "destroy");
			goto out;
		}
		r = tmkdir_p(dir, 0700);
		if (r < 0)
			goto out;
	}
	r = db_open(dir, true, false, &m);
	if (r < 0)
		goto out;

	root.ino = META_ROOT_INO;
	root.mode = S_IFDIR | 0755;
	root.uid = root_uid;
	root.gid = root_gid;
	root.nlink = 2;
	root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = now;
	root.generation = 1;
	be_put64(next, META_ROOT_INO + 1);

	b = meta_batch_new(m);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	rocksdb_writebatch_put_cf(b->wb, m->cf[CF_SYSTEM], META_KEY_SUPERBLOCK,
				  strlen(META_KEY_SUPERBLOCK), (const char *)sbuf, len);
	rocksdb_writebatch_put_cf(b->wb, m->cf[CF_SYSTEM], META_KEY_NEXT_INO,
				  strlen(META_KEY_NEXT_INO), (const char *)next, sizeof(next));
	rocksdb_writebatch_put_cf(b->wb, m->cf[CF_SYSTEM], META_KEY_ORPHAN_INDEX,
				  strlen(META_KEY_ORPHAN_INDEX), "", 0);
	meta_batch_inode_put(b, &root);
	r = meta_commit(m, b, true);
out:
	meta_batch_free(b);
	meta_close(m);
	opts_release(&o);
	free(sbuf);
	return r;
}

/* ---- orphan index ---- */

static size_t orphan_key(uint8_t out[META_ORPHAN_KEY_LEN], uint64_t ino)
{
	size_t n = sizeof(META_KEY_ORPHAN) - 1;

	memcpy(out, META_KEY_ORPHAN, n);
	be_put64(out + n, ino);
	return n + 8;
}

void meta_batch_orphan_put(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[META_ORPHAN_KEY_LEN];

	if (ino == 0) {
		meta_batch_poison(b, "orphan");
		return;
	}
	meta_batch_put(b, CF_SYSTEM, key, orphan_key(key, ino), "", 0);
}

void meta_batch_orphan_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[META_ORPHAN_KEY_LEN];

	meta_batch_del(b, CF_SYSTEM, key, orphan_key(key, ino));
}

struct orphan_scan {
	meta_orphan_fn fn;
	void *ctx;
};

static int orphan_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	struct orphan_scan *s = ctx;
	size_t n = sizeof(META_KEY_ORPHAN) - 1;

	if (klen < n || memcmp(key, META_KEY_ORPHAN, n) != 0)
		return 1; /* past the index */
	if (klen != META_ORPHAN_KEY_LEN)
		return 0; /* "orphan_index", among the entries */
	return s->fn(s->ctx, be_get64(key + n));
}

static int orphan_inode_one(void *ctx, const struct meta_inode *in)
{
	struct orphan_scan *s = ctx;

	return in->nlink == 0 ? s->fn(s->ctx, in->ino) : 0;
}

int meta_orphan_list(struct meta *m, meta_orphan_fn fn, void *ctx)
{
	struct orphan_scan s = { fn, ctx };
	rocksdb_pinnableslice_t *v = NULL;
	int r = meta_db_get(m, CF_SYSTEM, META_KEY_ORPHAN_INDEX, strlen(META_KEY_ORPHAN_INDEX), &v);

	if (v)
		rocksdb_pinnableslice_destroy(v);
	if (r == -ENOENT)
		return meta_inode_list(m, orphan_inode_one, &s);
	if (r < 0)
		return r;
	return meta_db_scan(m, CF_SYSTEM, NULL, (const uint8_t *)META_KEY_ORPHAN,
			    sizeof(META_KEY_ORPHAN) - 1, false, orphan_scan_one, &s);
}

static int wal_sync(struct meta *m)
{
	char *err = NULL;

	rocksdb_flush_wal(m->db, 1, &err);
	return err ? meta_err(err, "sync") : 0;
}

/* With a journal attached the batch is written unsynced under the journal lock (which orders
 * the records), and a synced commit then syncs the WAL and waits for its record to be durable
 * on the servers (group commit: the journal stores every waiting record in one segment). */
static int commit(struct meta *m, struct meta_batch *b, bool sync, bool journal)
{
	uint64_t seq = 0;
	int r = b->err;

	if (r == 0)
		r = meta_journal_write(m, b, sync, &seq);
	if (r == 0 && sync && seq) {
		r = wal_sync(m);
		if (r == 0 && journal)
			r = meta_journal_wait(m, seq);
	}
	rocksdb_writebatch_clear(b->wb);
	b->jlen = 0;
	b->err = 0;
	return r;
}

int meta_commit(struct meta *m, struct meta_batch *b, bool sync)
{
	return commit(m, b, sync, true);
}

int meta_commit_local(struct meta *m, struct meta_batch *b)
{
	return commit(m, b, true, false);
}

int meta_sync(struct meta *m)
{
	int r = wal_sync(m);

	return r < 0 ? r : meta_journal_wait(m, UINT64_MAX);
}

int meta_sync_local(struct meta *m)
{
	return wal_sync(m);
}

/* ---- bulk deletion ---- */

static int xattr_del_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			 size_t vlen)
{
	struct meta_batch *b = ctx;

	(void)val;
	(void)vlen;
	meta_batch_del(b, CF_XATTRS, key, klen);
	return 0;
}

int meta_batch_xattr_del_all(struct meta_batch *b, uint64_t ino)
{
	uint8_t prefix[8];

	be_put64(prefix, ino);
	return meta_db_scan(b->m, CF_XATTRS, prefix, prefix, sizeof(prefix), false, xattr_del_one, b);
}
