/*
 * meta_db.h: the RocksDB side of the metadata store, shared by meta.c (open, close, backup,
 * orphans, bulk deletion), meta_read.c (gets and scans) and meta_batch.c (WriteBatches):
 * struct meta, the column families, and the get/scan helpers. Nothing here is visible
 * outside src/meta/; record layouts are in meta_int.h and meta_record.c.
 */
#ifndef TESSERA_META_DB_H
#define TESSERA_META_DB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rocksdb/c.h>

#include "meta_int.h"

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

	/* The journal (meta_journal.c): jlock orders the journaled commits and guards these. */
	pthread_mutex_t jlock;
	struct meta_journal_sink sink; /* append == NULL: no journal attached */
	uint64_t jepoch, jseq;         /* the position: last committed record */

	struct meta_superblock sb; /* read at open, immutable */
};

struct meta_batch {
	struct meta *m;
	rocksdb_writebatch_t *wb;
	int err; /* first invalid put (-EINVAL): meta_commit() refuses the batch */
	uint8_t *jbuf; /* the batch's ops for the journal (meta_journal.c), while one is attached */
	size_t jlen, jcap;
};

/* Callback of meta_db_scan(): 0 continue, > 0 stop, < 0 stop with error. */
typedef int (*scan_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
		       size_t vlen);

/* Consumes a RocksDB error string; the one place where they are translated. */
int meta_err(char *err, const char *what);

/* Reads key of column family cf. Returns 0 and *ret (destroy with
 * rocksdb_pinnableslice_destroy()), -ENOENT, -EIO. */
int meta_db_get(struct meta *m, int cf, const void *key, size_t klen,
		rocksdb_pinnableslice_t **ret);

/* The bytes of a value read by meta_db_get (valid until it is destroyed). */
const uint8_t *meta_slice_value(const rocksdb_pinnableslice_t *v, size_t *len);

/* Iterates column family cf from start (NULL: the first key), skipping the key equal to
 * start when skip_start, while keys begin with the 8-byte prefix (NULL: to the end).
 * Returns 0, the callback's negative value, or -EIO. */
int meta_db_scan(struct meta *m, int cf, const uint8_t *prefix, const uint8_t *start,
		 size_t slen, bool skip_start, scan_fn fn, void *ctx);

/* Reads a raw value of at most max bytes (longer: a damaged record, -EIO) into buf (when
 * not NULL; -ERANGE when size is too small). Returns 0 and *ret_len, -ENOENT, -EIO. */
int meta_get_bytes(struct meta *m, int cf, const uint8_t *key, size_t klen, size_t max,
		   void *buf, size_t size, size_t *ret_len);

/* Adds a put or a delete of key in column family cf to b. */
void meta_batch_put(struct meta_batch *b, int cf, const void *key, size_t klen,
		    const void *val, size_t vlen);
void meta_batch_del(struct meta_batch *b, int cf, const void *key, size_t klen);

/* Marks the batch invalid: meta_commit() will refuse it rather than write a bad record. */
void meta_batch_poison(struct meta_batch *b, const char *what);

/* ---- the journal side (meta_journal.c) ---- */

/* Adds a put (op_del 0) or a delete to the batch's journal ops, when a journal is attached. */
void meta_journal_record(struct meta_batch *b, int op_del, int cf, const void *key, size_t klen,
			 const void *val, size_t vlen);
/* Reads the stored journal position into m (none: 0, 0). 0, -EBADMSG, -EIO. */
int meta_journal_load(struct meta *m);
/* Writes the batch (WAL not synced); with a journal attached, under the journal lock with the
 * next sequence number, which *ret_seq gets (0 without a journal), and hands its ops to the
 * sink. sync without a journal: the WAL is synced by the write itself. */
int meta_journal_write(struct meta *m, struct meta_batch *b, bool sync, uint64_t *ret_seq);

#endif
