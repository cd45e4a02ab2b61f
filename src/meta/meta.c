/*
 * meta: the metadata store, on RocksDB's C API.
 *
 * This file owns the database handle, its column families and options, and turns the module's
 * calls into RocksDB gets, iterators and WriteBatches. It does not decide what a namespace
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
#include "meta_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "tessera/common.h"

#define META_CACHE_BYTES (64u << 20)
#define META_BLOOM_BITS 10.0
#define META_INO_RESERVE 1024

static const char META_KEY_SUPERBLOCK[] = "superblock";
static const char META_KEY_NEXT_INO[] = "next_ino";
static const char META_KEY_ORPHAN[] = "orphan"; /* + ino(8, BE) */
static const char META_KEY_ORPHAN_INDEX[] = "orphan_index";
#define META_ORPHAN_KEY_LEN (sizeof(META_KEY_ORPHAN) - 1 + 8)

enum meta_cf {
	CF_DEFAULT,
	CF_INODES,
	CF_DENTRIES,
	CF_STRIPES,
	CF_XATTRS,
	CF_SYSTEM,
	CF_GARBAGE,
	CF_INLINE,
	CF_CHUNKS,
	CF_COUNT
};

static const char *const cf_names[CF_COUNT] = {
	"default", "inodes", "dentries", "stripes", "xattrs", "system", "garbage", "inline", "chunks",
};

struct meta {
	rocksdb_t *db;
	rocksdb_column_family_handle_t *cf[CF_COUNT];
	rocksdb_cache_t *cache;          /* block cache shared by every column family */
	rocksdb_readoptions_t *ro;
	rocksdb_writeoptions_t *wo;      /* WAL written, not synced */
	rocksdb_writeoptions_t *wo_sync; /* WAL fsync'ed before the write returns */
	char *dir;

	pthread_mutex_t ino_lock;
	uint64_t ino_next;  /* ino_lock: next number to hand out */
	uint64_t ino_limit; /* ino_lock: persisted counter; numbers below it may be in use */

	_Atomic uint64_t garbage_seq; /* next garbage sequence number */

	struct meta_superblock sb; /* read at open, immutable */
};

struct meta_batch {
	struct meta *m;
	rocksdb_writebatch_t *wb;
	int err; /* first invalid put (-EINVAL): meta_commit() refuses the batch */
};

/* Consumes a RocksDB error string; the one place where they are translated. */
static int meta_err(char *err, const char *what)
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
static int db_get(struct meta *m, int cf, const void *key, size_t klen,
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

static const uint8_t *slice_value(const rocksdb_pinnableslice_t *v, size_t *len)
{
	return (const uint8_t *)rocksdb_pinnableslice_value(v, len);
}

/* Callback of db_scan(): 0 continue, > 0 stop, < 0 stop with error. */
typedef int (*scan_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen);

/* Iterates column family cf from start (NULL: the first key), skipping the key equal to
 * start when skip_start, while keys begin with the 8-byte prefix (NULL: to the end).
 * Returns 0, the callback's negative value, or -EIO. */
static int db_scan(struct meta *m, int cf, const uint8_t *prefix, const uint8_t *start,
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

	r = db_get(m, CF_SYSTEM, META_KEY_SUPERBLOCK, strlen(META_KEY_SUPERBLOCK), &v);
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
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

	r = db_get(m, CF_SYSTEM, META_KEY_NEXT_INO, strlen(META_KEY_NEXT_INO), &v);
	if (r == -ENOENT)
		r = -EBADMSG;
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
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
	char *err = NULL;
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
	rocksdb_put_cf(m->db, m->wo_sync, m->cf[CF_SYSTEM], META_KEY_SUPERBLOCK,
		       strlen(META_KEY_SUPERBLOCK), (const char *)buf, len, &err);
	if (err) {
		r = meta_err(err, "write the superblock");
		goto out;
	}
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

/* ---- reads ---- */

int meta_inode_get(struct meta *m, uint64_t ino, struct meta_inode *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	struct meta_inode in;
	uint8_t key[8];
	const uint8_t *p;
	size_t len;
	int r;

	be_put64(key, ino);
	r = db_get(m, CF_INODES, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
	if (meta_inode_decode(p, len, &in) < 0 || in.ino != ino) {
		tlog_debug("meta: inode %llu: damaged record", (unsigned long long)ino);
		r = -EIO;
		goto out;
	}
	*ret = in;
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

int meta_dentry_get(struct meta *m, uint64_t parent, const char *name, size_t name_len,
		    uint64_t *ret_ino, uint32_t *ret_mode)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[META_DENTRY_KEY_MAX];
	const uint8_t *p;
	size_t klen, len;
	int r;

	if (name_len > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (name_len == 0)
		return -ENOENT;
	klen = meta_dentry_key(key, parent, name, name_len);
	r = db_get(m, CF_DENTRIES, key, klen, &v);
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
	if (len != META_DENTRY_VAL_SIZE || be_get64(p) == 0) {
		tlog_debug("meta: dentry in %llu: damaged record", (unsigned long long)parent);
		r = -EIO;
		goto out;
	}
	*ret_ino = be_get64(p);
	if (ret_mode)
		*ret_mode = be_get32(p + 8);
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

struct dentry_scan {
	meta_dentry_fn fn;
	meta_dentry_all_fn fn_all; /* instead of fn: every entry, with its parent */
	void *ctx;
};

static int dentry_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	struct dentry_scan *s = ctx;
	char name[META_NAME_MAX + 1];
	size_t n = klen - 8;

	if (n == 0 || n > META_NAME_MAX || vlen != META_DENTRY_VAL_SIZE) {
		tlog_debug("meta: dentry in %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	memcpy(name, key + 8, n);
	name[n] = '\0';
	if (s->fn_all)
		return s->fn_all(s->ctx, be_get64(key), name, n, be_get64(val), be_get32(val + 8));
	return s->fn(s->ctx, name, n, be_get64(val), be_get32(val + 8));
}

int meta_dentry_list(struct meta *m, uint64_t parent, const char *after, size_t after_len,
		     meta_dentry_fn fn, void *ctx)
{
	struct dentry_scan s = { .fn = fn, .ctx = ctx };
	uint8_t start[8 + META_NAME_MAX];
	size_t slen;

	if (!after)
		after_len = 0;
	if (after_len > META_NAME_MAX)
		return -ENAMETOOLONG;
	slen = meta_dentry_key(start, parent, after, after_len);
	return db_scan(m, CF_DENTRIES, start, start, slen, after_len > 0, dentry_scan_one, &s);
}

int meta_dentry_list_all(struct meta *m, meta_dentry_all_fn fn, void *ctx)
{
	struct dentry_scan s = { .fn_all = fn, .ctx = ctx };

	return db_scan(m, CF_DENTRIES, NULL, NULL, 0, false, dentry_scan_one, &s);
}

static int has_entries_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	*(int *)ctx = 1;
	return 1;
}

int meta_dir_has_entries(struct meta *m, uint64_t parent)
{
	uint8_t prefix[8];
	int found = 0, r;

	be_put64(prefix, parent);
	r = db_scan(m, CF_DENTRIES, prefix, prefix, sizeof(prefix), false, has_entries_one,
		    &found);
	return r < 0 ? r : found;
}

int meta_stripe_get(struct meta *m, uint64_t ino, uint64_t stripe, struct meta_stripe *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[16];
	const uint8_t *p;
	size_t len;
	int r;

	meta_stripe_key(key, ino, stripe);
	r = db_get(m, CF_STRIPES, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
	r = meta_stripe_decode(p, len, ret);
	if (r < 0) {
		tlog_debug("meta: stripe %llu/%llu: damaged record", (unsigned long long)ino,
			   (unsigned long long)stripe);
		r = -EIO;
	}
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

struct stripe_scan {
	meta_stripe_fn fn;
	meta_stripe_all_fn fn_all; /* instead of fn: every record, with its inode */
	void *ctx;
	struct meta_stripe s; /* scratch: about 400 bytes, kept off the callback's stack */
};

static int stripe_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	struct stripe_scan *s = ctx;

	if (klen != 16 || meta_stripe_decode(val, vlen, &s->s) < 0) {
		tlog_debug("meta: stripe of %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	if (s->fn_all)
		return s->fn_all(s->ctx, be_get64(key), be_get64(key + 8), &s->s);
	return s->fn(s->ctx, be_get64(key + 8), &s->s);
}

int meta_stripe_list_all(struct meta *m, meta_stripe_all_fn fn, void *ctx)
{
	struct stripe_scan s = { .fn_all = fn, .ctx = ctx };

	return db_scan(m, CF_STRIPES, NULL, NULL, 0, false, stripe_scan_one, &s);
}

int meta_stripe_list(struct meta *m, uint64_t ino, uint64_t from, meta_stripe_fn fn, void *ctx)
{
	struct stripe_scan s = { .fn = fn, .ctx = ctx };
	uint8_t start[16];

	meta_stripe_key(start, ino, from);
	return db_scan(m, CF_STRIPES, start, start, sizeof(start), false, stripe_scan_one, &s);
}

struct inode_scan {
	meta_inode_fn fn;
	void *ctx;
};

static int inode_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			  size_t vlen)
{
	struct inode_scan *s = ctx;
	struct meta_inode in;

	if (klen != 8 || meta_inode_decode(val, vlen, &in) < 0 || in.ino != be_get64(key)) {
		tlog_debug("meta: inode table: damaged record");
		return -EIO;
	}
	return s->fn(s->ctx, &in);
}

int meta_inode_list(struct meta *m, meta_inode_fn fn, void *ctx)
{
	struct inode_scan s = { fn, ctx };

	return db_scan(m, CF_INODES, NULL, NULL, 0, false, inode_scan_one, &s);
}

struct garbage_scan {
	meta_garbage_fn fn;
	void *ctx;
};

static int garbage_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			    size_t vlen)
{
	struct garbage_scan *s = ctx;
	struct meta_garbage g;

	if (klen != 8 || meta_garbage_decode(val, vlen, &g) < 0) {
		tlog_debug("meta: garbage queue: damaged record");
		return -EIO;
	}
	return s->fn(s->ctx, be_get64(key), &g);
}

int meta_garbage_list(struct meta *m, meta_garbage_fn fn, void *ctx)
{
	struct garbage_scan s = { fn, ctx };

	return db_scan(m, CF_GARBAGE, NULL, NULL, 0, false, garbage_scan_one, &s);
}

/* Reads a raw value of at most max bytes (longer: a damaged record, -EIO) into buf (when
 * not NULL; -ERANGE when size is too small). Returns 0 and *ret_len, -ENOENT, -EIO. */
static int get_bytes(struct meta *m, int cf, const uint8_t *key, size_t klen, size_t max,
		     void *buf, size_t size, size_t *ret_len)
{
	rocksdb_pinnableslice_t *v = NULL;
	const uint8_t *p;
	size_t len;
	int r = db_get(m, cf, key, klen, &v);

	if (r < 0)
		goto out;
	p = slice_value(v, &len);
	if (len > max) {
		r = -EIO;
		goto out;
	}
	if (buf) {
		if (size < len) {
			r = -ERANGE;
			goto out;
		}
		if (len)
			memcpy(buf, p, len);
	}
	*ret_len = len;
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

int meta_xattr_get(struct meta *m, uint64_t ino, const char *name, size_t name_len, void *buf,
		   size_t size, size_t *ret_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;
	int r;

	if (name_len > META_XATTR_NAME_MAX)
		return -ENAMETOOLONG;
	if (name_len == 0)
		return -ENODATA;
	klen = meta_dentry_key(key, ino, name, name_len); /* same layout: ino + name */
	r = get_bytes(m, CF_XATTRS, key, klen, META_XATTR_SIZE_MAX, buf, size, ret_len);
	return r == -ENOENT ? -ENODATA : r;
}

struct xattr_scan {
	meta_xattr_fn fn;
	void *ctx;
};

static int xattr_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			  size_t vlen)
{
	struct xattr_scan *s = ctx;
	char name[META_XATTR_NAME_MAX + 1];
	size_t n = klen - 8;

	if (n == 0 || n > META_XATTR_NAME_MAX || vlen > META_XATTR_SIZE_MAX) {
		tlog_debug("meta: xattr of %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	memcpy(name, key + 8, n);
	name[n] = '\0';
	return s->fn(s->ctx, name, n, val, vlen);
}

int meta_xattr_list(struct meta *m, uint64_t ino, meta_xattr_fn fn, void *ctx)
{
	struct xattr_scan s = { fn, ctx };
	uint8_t prefix[8];

	be_put64(prefix, ino);
	return db_scan(m, CF_XATTRS, prefix, prefix, sizeof(prefix), false, xattr_scan_one, &s);
}

int meta_alloc_ino(struct meta *m, uint64_t *ret)
{
	char *err = NULL;
	int r = 0;

	pthread_mutex_lock(&m->ino_lock);
	if (m->ino_next >= m->ino_limit) {
		uint64_t limit = m->ino_next + META_INO_RESERVE;
		uint8_t v[8];

		if (limit < m->ino_next) {
			r = -ENOSPC;
			goto out;
		}
		be_put64(v, limit);
		rocksdb_put_cf(m->db, m->wo_sync, m->cf[CF_SYSTEM], META_KEY_NEXT_INO,
			       strlen(META_KEY_NEXT_INO), (const char *)v, sizeof(v), &err);
		if (err) {
			r = meta_err(err, "inode counter");
			goto out;
		}
		m->ino_limit = limit;
	}
	*ret = m->ino_next++;
out:
	pthread_mutex_unlock(&m->ino_lock);
	return r;
}

/* ---- batches ---- */

struct meta_batch *meta_batch_new(struct meta *m)
{
	struct meta_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->m = m;
	b->wb = rocksdb_writebatch_create();
	return b;
}

void meta_batch_free(struct meta_batch *b)
{
	if (!b)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

static void batch_put(struct meta_batch *b, int cf, const void *key, size_t klen,
		      const void *val, size_t vlen)
{
	rocksdb_writebatch_put_cf(b->wb, b->m->cf[cf], key, klen, val, vlen);
}

static void batch_del(struct meta_batch *b, int cf, const void *key, size_t klen)
{
	rocksdb_writebatch_delete_cf(b->wb, b->m->cf[cf], key, klen);
}

/* Marks the batch invalid: meta_commit() will refuse it rather than write a bad record. */
static void batch_poison(struct meta_batch *b, const char *what)
{
	tlog_debug("meta: batch: invalid %s", what);
	if (b->err == 0)
		b->err = -EINVAL;
}

void meta_batch_inode_put(struct meta_batch *b, const struct meta_inode *in)
{
	uint8_t key[8], val[META_INODE_ENC_SIZE];

	if (in->ino == 0) {
		batch_poison(b, "inode 0");
		return;
	}
	be_put64(key, in->ino);
	meta_inode_encode(in, val, sizeof(val));
	batch_put(b, CF_INODES, key, sizeof(key), val, sizeof(val));
}

void meta_batch_inode_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[8];

	be_put64(key, ino);
	batch_del(b, CF_INODES, key, sizeof(key));
}

void meta_batch_dentry_put(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len, uint64_t ino, uint32_t mode)
{
	uint8_t key[META_DENTRY_KEY_MAX], val[META_DENTRY_VAL_SIZE];
	size_t klen;

	if (name_len == 0 || name_len > META_NAME_MAX || ino == 0) {
		batch_poison(b, "directory entry");
		return;
	}
	klen = meta_dentry_key(key, parent, name, name_len);
	be_put64(val, ino);
	be_put32(val + 8, mode & S_IFMT);
	batch_put(b, CF_DENTRIES, key, klen, val, sizeof(val));
}

void meta_batch_dentry_del(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len)
{
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_NAME_MAX) {
		batch_poison(b, "directory entry");
		return;
	}
	klen = meta_dentry_key(key, parent, name, name_len);
	batch_del(b, CF_DENTRIES, key, klen);
}

void meta_batch_stripe_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   const struct meta_stripe *s)
{
	uint8_t key[16], val[META_STRIPE_ENC_MAX];
	size_t len = meta_stripe_encode(s, val, sizeof(val));

	/* the decoder's consistency checks, applied before anything is written */
	if (len == 0 || meta_stripe_decode(val, len, &(struct meta_stripe){ 0 }) < 0) {
		batch_poison(b, "stripe record");
		return;
	}
	meta_stripe_key(key, ino, stripe);
	batch_put(b, CF_STRIPES, key, sizeof(key), val, len);
}

void meta_batch_stripe_del(struct meta_batch *b, uint64_t ino, uint64_t stripe)
{
	uint8_t key[16];

	meta_stripe_key(key, ino, stripe);
	batch_del(b, CF_STRIPES, key, sizeof(key));
	batch_del(b, CF_CHUNKS, key, sizeof(key)); /* the stripe's chunk sums go with it */
}

/* chunks value: version(8) k(1) per_frag(2) then k * per_frag crc32c (4 each), big-endian,
 * fragment-major. */
void meta_batch_chunks_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   uint64_t version, unsigned k, unsigned per_frag, const uint32_t *crcs)
{
	uint8_t key[16], *val;
	size_t n = (size_t)k * per_frag, len = 11 + 4 * n;

	if (k == 0 || k > 64 || per_frag == 0 || per_frag > META_CHUNKS_PER_FRAG_MAX) {
		batch_poison(b, "chunks");
		return;
	}
	val = malloc(len);
	if (!val) {
		batch_poison(b, "chunks");
		return;
	}
	be_put64(val, version);
	val[8] = (uint8_t)k;
	be_put16(val + 9, (uint16_t)per_frag);
	for (size_t i = 0; i < n; i++)
		be_put32(val + 11 + 4 * i, crcs[i]);
	meta_stripe_key(key, ino, stripe);
	batch_put(b, CF_CHUNKS, key, sizeof(key), val, len);
	free(val);
}

int meta_chunk_crc_get(struct meta *m, uint64_t ino, uint64_t stripe, uint64_t version,
		       unsigned frag, unsigned chunk, uint32_t *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[16];
	const uint8_t *p;
	size_t len;
	int r;

	meta_stripe_key(key, ino, stripe);
	r = db_get(m, CF_CHUNKS, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = slice_value(v, &len);
	if (len < 11) {
		r = -EIO;
		goto out;
	}
	unsigned k = p[8], per = be_get16(p + 9);
	if (len != 11 + 4 * (size_t)k * per) {
		r = -EIO;
		goto out;
	}
	if (be_get64(p) != version || frag >= k || chunk >= per) {
		r = -ENOENT; /* sums of another version, or no such chunk */
		goto out;
	}
	*ret = be_get32(p + 11 + 4 * ((size_t)frag * per + chunk));
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

void meta_batch_xattr_put(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len, const void *value, size_t value_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_XATTR_NAME_MAX || value_len > META_XATTR_SIZE_MAX) {
		batch_poison(b, "xattr");
		return;
	}
	klen = meta_dentry_key(key, ino, name, name_len);
	batch_put(b, CF_XATTRS, key, klen, value_len ? value : "", value_len);
}

void meta_batch_xattr_del(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_XATTR_NAME_MAX) {
		batch_poison(b, "xattr");
		return;
	}
	klen = meta_dentry_key(key, ino, name, name_len);
	batch_del(b, CF_XATTRS, key, klen);
}

int meta_inline_get(struct meta *m, uint64_t ino, void *buf, size_t size, size_t *ret_len)
{
	uint8_t key[8];

	be_put64(key, ino);
	return get_bytes(m, CF_INLINE, key, sizeof(key), META_INLINE_MAX, buf, size, ret_len);
}

void meta_batch_inline_put(struct meta_batch *b, uint64_t ino, const void *data, size_t len)
{
	uint8_t key[8];

	if (ino == 0 || len > META_INLINE_MAX) {
		batch_poison(b, "inline");
		return;
	}
	be_put64(key, ino);
	batch_put(b, CF_INLINE, key, sizeof(key), len ? data : "", len);
}

void meta_batch_inline_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[8];

	be_put64(key, ino);
	batch_del(b, CF_INLINE, key, sizeof(key));
}

void meta_batch_garbage_add(struct meta_batch *b, const struct meta_garbage *g)
{
	uint8_t key[8], val[META_GARBAGE_ENC_SIZE];

	if (g->index >= 64) {
		batch_poison(b, "garbage entry");
		return;
	}
	be_put64(key, atomic_fetch_add(&b->m->garbage_seq, 1));
	meta_garbage_encode(g, val);
	batch_put(b, CF_GARBAGE, key, sizeof(key), val, sizeof(val));
}

void meta_batch_garbage_del(struct meta_batch *b, uint64_t seq)
{
	uint8_t key[8];

	be_put64(key, seq);
	batch_del(b, CF_GARBAGE, key, sizeof(key));
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
		batch_poison(b, "orphan");
		return;
	}
	batch_put(b, CF_SYSTEM, key, orphan_key(key, ino), "", 0);
}

void meta_batch_orphan_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[META_ORPHAN_KEY_LEN];

	batch_del(b, CF_SYSTEM, key, orphan_key(key, ino));
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
	int r = db_get(m, CF_SYSTEM, META_KEY_ORPHAN_INDEX, strlen(META_KEY_ORPHAN_INDEX), &v);

	if (v)
		rocksdb_pinnableslice_destroy(v);
	if (r == -ENOENT)
		return meta_inode_list(m, orphan_inode_one, &s);
	if (r < 0)
		return r;
	return db_scan(m, CF_SYSTEM, NULL, (const uint8_t *)META_KEY_ORPHAN,
		       sizeof(META_KEY_ORPHAN) - 1, false, orphan_scan_one, &s);
}

int meta_commit(struct meta *m, struct meta_batch *b, bool sync)
{
	char *err = NULL;
	int r = b->err;

	if (r == 0) {
		rocksdb_write(m->db, sync ? m->wo_sync : m->wo, b->wb, &err);
		if (err)
			r = meta_err(err, "commit");
	}
	rocksdb_writebatch_clear(b->wb);
	b->err = 0;
	return r;
}

int meta_sync(struct meta *m)
{
	char *err = NULL;

	rocksdb_flush_wal(m->db, 1, &err);
	return err ? meta_err(err, "sync") : 0;
}

/* ---- bulk deletion ---- */

static int xattr_del_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			 size_t vlen)
{
	struct meta_batch *b = ctx;

	(void)val;
	(void)vlen;
	batch_del(b, CF_XATTRS, key, klen);
	return 0;
}

int meta_batch_xattr_del_all(struct meta_batch *b, uint64_t ino)
{
	uint8_t prefix[8];

	be_put64(prefix, ino);
	return db_scan(b->m, CF_XATTRS, prefix, prefix, sizeof(prefix), false, xattr_del_one, b);
}
