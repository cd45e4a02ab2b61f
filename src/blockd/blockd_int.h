/*
 * blockd internals: the object store (store.c) and the errno -> S3 error table (errors.c),
 * used by the HTTP front end (server.c).
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
#define BD_ETAG_XATTR "user.tessera.etag"

struct bd_dir {
	char root[PATH_MAX];    /* the data directory as configured */
	char objects[PATH_MAX]; /* root/objects */
	char tmp[PATH_MAX];     /* root/tmp */
	atomic_int_fast64_t n_objects; /* objects in this directory (counted at open, then kept) */
	atomic_int_fast64_t n_bytes;   /* their total size */
};

/* The object store over one or more data directories. Thread-safe: commit and delete of one
 * key are serialised by locks[hash(bucket, key) % BD_LOCK_STRIPES]; reads take no lock. */
struct bd_store {
	unsigned n_dirs;
	struct bd_dir dirs[BLOCKD_MAX_DIRS];
	pthread_mutex_t locks[BD_LOCK_STRIPES];
	atomic_int_fast64_t objects; /* objects counted at open, then kept by put/delete */
};

/* An object being received: a temp file in dirs[dir].tmp plus running digests. */
struct bd_put {
	struct bd_store *store;
	unsigned dir;
	int fd;                 /* -1 when closed */
	char tmp_path[PATH_MAX];
	uint64_t size;
	EVP_MD_CTX *md5;
	EVP_MD_CTX *sha256;     /* NULL unless asked for */
	char md5_hex[33];       /* set by bd_put_finish() */
	char sha256_hex[65];    /* set by bd_put_finish() when sha256 was asked for */
};

struct bd_object {
	int fd;                 /* open for reading; the caller closes it */
	uint64_t size;
	int64_t mtime_s;
	char etag[33];          /* hex MD5 of the content */
};

/* Creates DIR/objects and DIR/tmp in every data directory, removes temp files left by a
 * crash and counts the objects. Returns 0 or -errno; *ret_bad_dir names the directory that
 * failed. */
int bd_store_open(struct bd_store *s, const char (*dirs)[4096], unsigned n_dirs,
		  const char **ret_bad_dir);
void bd_store_close(struct bd_store *s);

/* Starts receiving bucket/key: picks the data directory (the one already holding the key,
 * else weighted by free space) and creates the temp file. Returns 0 or -errno. */
int bd_put_begin(struct bd_store *s, const char *bucket, const char *key, bool want_sha256,
		 struct bd_put *p);
/* Appends body bytes. Returns 0 or -errno (-ENOSPC, -EIO ...). */
int bd_put_write(struct bd_put *p, const void *buf, size_t len);
/* Finalises the digests (md5_hex, sha256_hex). Returns 0 or -EIO. */
int bd_put_finish(struct bd_put *p);
/* Makes the object durable and visible: fsync, rename into place, fsync the directory.
 * Requires bd_put_finish(). On failure the temp file is removed. Returns 0 or -errno. */
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

/* Lists keys of bucket that start with prefix and sort after start_after (may be ""), in
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

/* ---------------------------------------------------------------- errors */

struct bd_error {
	int err;              /* positive errno */
	unsigned status;      /* HTTP status */
	const char *code;     /* S3 error code */
	const char *message;  /* default client-facing message */
};

/* The one errno -> (HTTP status, S3 code) table. Unknown errnos map to 500 InternalError. */
const struct bd_error *bd_error_lookup(int err);

/* Extra errnos the front end uses for S3 conditions errno has no name for. */
#define BD_ENOBUCKET ENXIO          /* NoSuchBucket */
#define BD_EAUTHMALFORMED EPROTO    /* AuthorizationHeaderMalformed */
#define BD_ENOTIMPL ENOSYS          /* NotImplemented */
#define BD_EINCOMPLETE EMSGSIZE     /* IncompleteBody */
#define BD_EBADDIGEST EBADE         /* BadDigest: Content-MD5 or x-amz-checksum-* mismatch */
#define BD_EINVALDIGEST EBADR       /* InvalidDigest: a digest header that is not valid */
#define BD_ENOLENGTH ENODATA        /* MissingContentLength */

/* The x-amz-content-sha256 value of an unsigned aws-chunked body with trailers. */
#define BD_STREAMING_UNSIGNED_TRAILER "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

#endif
