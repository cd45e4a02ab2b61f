/*
 * blockd internals: the object store (store.c, listings in store_list.c), used by the HTTP
 * front end (server*.c, server_int.h). The errno -> S3 error table is proto's
 * (proto_s3_error_by_errno()).
 */
#ifndef TESSERA_BLOCKD_INT_H
#define TESSERA_BLOCKD_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "tessera/blockd.h"
#include "tessera/proto.h"

/* ---------------------------------------------------------------- store */

#define BD_LOCK_STRIPES 64
#define BD_LIST_MAX_DEPTH (PROTO_KEY_MAX / 2 + 2) /* directory levels below a bucket */
#define BD_DSYNC_SLOTS 64
#define BD_ETAG_XATTR "user.tessera.etag"
#define BD_ETAG_MAX 40          /* longest ETag kept (without quotes, with NUL) */
#define BD_DIRECT_MIN (128u << 10) /* bodies from this size are written with O_DIRECT */
/* The aligned staging buffer of an O_DIRECT put: a whole fragment (1 MiB + header) goes to
 * disk in one write. At most BD_STAGE_MAX are in use (128 MiB); puts beyond that, like small
 * ones, go through the page cache. */
#define BD_STAGE_SIZE (2u << 20)
#define BD_STAGE_ALIGN 4096u
#define BD_STAGE_CACHE 16          /* free staging buffers kept for reuse */
#define BD_STAGE_MAX 64

/* Group commit of directory fsyncs (store.c, "Group commit"): one entry per directory that
 * has renames or unlinks waiting to become durable. */
struct bd_dsync_waiter {
	uint64_t ticket;
	bool done;
	int result;
	struct bd_dsync_waiter *next;
};
struct bd_dsync {
	struct bd_dsync *next;
	uint64_t issued;        /* tickets handed out: changes announced in this directory */
	bool running;           /* a leader is in fsync(2) */
	unsigned refs;          /* threads holding this entry */
	struct bd_dsync_waiter *waiters;
	char path[];            /* the directory */
};
struct bd_dsync_slot {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct bd_dsync *list;
};

/* An old version of a replaced object, linked into DIR/tmp, waiting for the deleter thread
 * (store.c, "Deferred deletes"). */
struct bd_del {
	struct bd_del *next;
	char path[];
};
#define BD_DEL_MAX 4096 /* queued at most; beyond, the put unlinks its old version itself */

struct bd_dir {
	char root[PATH_MAX];    /* the data directory as configured */
	char objects[PATH_MAX]; /* root/objects */
	char tmp[PATH_MAX];     /* root/tmp */
	bool xattr_ok;          /* user xattrs work here (probed at open) */
	atomic_int_fast64_t n_objects; /* objects in this directory (counted at open, then kept) */
	atomic_int_fast64_t n_bytes;   /* their total size */
};

/* The object store over one or more data directories. Thread-safe: commit and delete of one
 * key are serialised by locks[hash(bucket, key) % BD_LOCK_STRIPES]; reads take no lock. */
struct bd_store {
	unsigned n_dirs;
	struct bd_dir dirs[BLOCKD_MAX_DIRS];
	pthread_mutex_t locks[BD_LOCK_STRIPES];
	struct bd_dsync_slot dsync[BD_DSYNC_SLOTS];
	atomic_int_fast64_t objects; /* objects counted at open, then kept by put/delete */
	pthread_mutex_t stage_lock;        /* the free staging buffers */
	void *stages[BD_STAGE_CACHE];
	unsigned n_stages;                 /* free, in stages[] */
	unsigned stages_out;               /* in use by puts */
	atomic_uint_fast64_t dir_fsyncs;   /* fsync(2) calls on directories (group commit) */
	atomic_uint_fast64_t dir_syncs_wanted; /* changes that needed one */
	/* Deferred deletes: the queue (del_lock) and the deleter thread. */
	pthread_mutex_t del_lock;
	pthread_cond_t del_cond;
	struct bd_del *del_head, *del_tail;
	unsigned del_queued;
	bool del_stopping;
	bool del_running;       /* del_thread was started */
	pthread_t del_thread;
};

/* An object being received: a temp file in dirs[dir].tmp plus running digests. */
struct bd_put {
	struct bd_store *store;
	unsigned dir;
	int fd;                 /* -1 when closed */
	char tmp_path[PATH_MAX];
	uint64_t size;          /* body bytes received */
	uint64_t synced;        /* bytes whose writeback was started (buffered puts) */
	char *stage;            /* O_DIRECT puts: aligned buffer of the bytes after "written" */
	size_t staged;
	uint64_t written;       /* O_DIRECT puts: bytes in the file */
	EVP_MD_CTX *md5;        /* NULL when the MD5 is not wanted (bd_put_begin()) */
	EVP_MD_CTX *sha256;     /* NULL unless asked for */
	char md5_hex[33];       /* set by bd_put_finish() when the MD5 was computed */
	char sha256_hex[65];    /* set by bd_put_finish() when sha256 was asked for */
	char etag[BD_ETAG_MAX]; /* set by bd_put_finish(): md5_hex, or a unique non-MD5 tag */
};

struct bd_object {
	int fd;                 /* open for reading; the caller closes it */
	uint64_t size;
	int64_t mtime_s;
	char etag[BD_ETAG_MAX]; /* hex MD5 of the content, or the tag stored with it */
};

/* Creates DIR/objects and DIR/tmp in every data directory, removes temp files (and old
 * versions waiting for deletion) left by a crash, counts the objects and starts the deleter
 * thread. Returns 0 or -errno; *ret_bad_dir names the directory that failed. */
int bd_store_open(struct bd_store *s, const char (*dirs)[4096], unsigned n_dirs,
		  const char **ret_bad_dir);
/* Stops the deleter thread (after it deleted everything queued) and frees. */
void bd_store_close(struct bd_store *s);

/* Starts receiving bucket/key: picks the data directory (the one already holding the key,
 * else weighted by free space) and creates the temp file. expected_size (0: unknown) of at
 * least BD_DIRECT_MIN writes the body with O_DIRECT, bypassing the page cache. want_md5 false lets the ETag be a
 * unique tag that is not the MD5 ("<32 hex>-1", as S3 gives objects whose ETag is not an MD5)
 * where the directory can store it in an xattr; elsewhere the MD5 is computed anyway.
 * Returns 0 or -errno. */
int bd_put_begin(struct bd_store *s, const char *bucket, const char *key,
		 uint64_t expected_size, bool want_md5, bool want_sha256, struct bd_put *p);
/* Appends body bytes. Returns 0 or -errno (-ENOSPC, -EIO ...). */
int bd_put_write(struct bd_put *p, const void *buf, size_t len);
/* Finalises the digests (md5_hex, sha256_hex) and the etag. Returns 0 or -EIO. */
int bd_put_finish(struct bd_put *p);
/* Makes the object durable and visible: fdatasync, rename into place, fsync the directory
 * (group commit). The version it replaces is unlinked later by the deleter thread. Requires
 * bd_put_finish(). On failure the temp file is removed. Blocks on the disk: call it where
 * waiting is allowed. Returns 0 or -errno. */
int bd_put_commit(struct bd_put *p, const char *bucket, const char *key);
/* Removes the temp file and frees the digests; safe to call twice and after commit. */
void bd_put_abort(struct bd_put *p);

/* Opens the newest copy of bucket/key. Returns 0, -ENOENT (no such key), -ENXIO (no such
 * bucket in any directory) or -errno. */
int bd_store_get(struct bd_store *s, const char *bucket, const char *key, struct bd_object *ret);
/* Removes bucket/key from every directory. Returns 0 also when it did not exist. */
int bd_store_delete(struct bd_store *s, const char *bucket, const char *key);
/* Creates the bucket directory everywhere (PUT /bucket). Returns 0 or -errno. */
int bd_store_bucket_create(struct bd_store *s, const char *bucket);
/* 0 when the bucket directory exists in some data directory, else -ENXIO. */
int bd_store_bucket_exists(struct bd_store *s, const char *bucket);

/* a/b/c (c may be NULL: a/b) into out. Returns 0 or -ENAMETOOLONG. */
int bd_path_join(char *out, size_t size, const char *a, const char *b, const char *c);

/* Lists keys of bucket that start with prefix (store_list.c) and sort after start_after (may be ""), in
 * byte order, at most max_keys. keys receives malloc'd strings (free each and the array). */
struct bd_list_entry {
	char *key;
	uint64_t size;
	int64_t mtime_s;
};
int bd_store_list(struct bd_store *s, const char *bucket, const char *prefix,
		  const char *start_after, unsigned max_keys, struct bd_list_entry **ret,
		  unsigned *ret_n, bool *ret_truncated);
void bd_list_free(struct bd_list_entry *e, unsigned n);

/* Request header of a PUT: "no-md5" lets the ETag be a unique tag instead of the MD5. */
#define BD_ETAG_HEADER "x-tessera-etag"

/* The x-amz-content-sha256 value of an unsigned aws-chunked body with trailers. */
#define BD_STREAMING_UNSIGNED_TRAILER "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

#endif
