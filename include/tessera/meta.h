/*
 * meta: the RocksDB metadata store.
 *
 * Column families:
 *   inodes    key ino(8, BE)                       value struct meta_inode (encoded)
 *   dentries  key parent ino(8, BE) + name bytes    value child ino(8, BE) + mode type(4, BE)
 *   stripes   key ino(8, BE) + stripe index(8, BE)  value struct meta_stripe (encoded)
 *   xattrs    key ino(8, BE) + name bytes           value raw bytes
 *   system    key ascii name ("superblock", "next_ino")   value encoded records; the server
 *             map is part of the superblock record ("servers" is reserved);
 *             "orphan" + ino(8, BE), empty value: the orphan index (meta_orphan_list());
 *             "orphan_index": present when the filesystem keeps that index (made by mkfs)
 *   garbage   key sequence(8, BE)                   value struct meta_garbage (encoded)
 *   chunks    key ino(8, BE) + stripe index(8, BE)  value the chunk sums of the stripe's data
 *             fragments (see meta_batch_chunks_put)
 *   inline    key ino(8, BE)                        value raw bytes: the whole contents of a
 *             small file kept in the metadata instead of stripes, or a symlink's target
 *
 * Fixed-width big-endian integer keys make prefix scans ordered: a directory listing is a
 * prefix scan over its parent's entries, a file's stripes come out in order.
 *
 * Every change goes through a struct meta_batch (a RocksDB WriteBatch) committed atomically
 * with meta_commit(): a crash leaves either the state before or after, never half.
 *
 * Thread-safety: reads and commits may run concurrently from any thread (RocksDB is thread
 * safe). Read-check-write sequences need the caller's own lock (the fs layer holds one).
 * A batch belongs to one thread.
 */
#ifndef TESSERA_META_H
#define TESSERA_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_ROOT_INO 1
#define META_NAME_MAX 255
#define META_MAX_SERVERS 256
#define META_FORMAT_VERSION 1

struct meta;
struct meta_batch;

/* ---- records ---- */

struct meta_inode {
	uint64_t ino;
	uint32_t mode;     /* S_IFMT bits and permissions */
	uint32_t uid, gid;
	uint32_t nlink;
	uint64_t size;
	uint64_t rdev;     /* device number (S_IFCHR, S_IFBLK); for a directory the fs layer
			      keeps its parent directory's inode here ('..'; 0 = the root) */
	uint64_t atime_ns, mtime_ns, ctime_ns, btime_ns; /* since the epoch; a time before
							     1970 is stored two's complement */
	uint64_t generation;
	uint32_t flags;    /* META_INODE_F_* */
};
#define META_INODE_F_ORPHAN 0x1u /* nlink 0 but still open; removed at last release or mount */

/* One stripe of a file: which version is current, where its fragments are. */
struct meta_stripe {
	uint64_t version;
	uint32_t data_len;   /* bytes of file data in this stripe (<= stripe size) */
	uint32_t frag_len;   /* payload bytes per fragment */
	uint8_t k, m;
	uint32_t flags;      /* META_STRIPE_F_* */
	uint64_t present;    /* bit i: fragment i was stored */
	uint16_t servers[64]; /* server id holding fragment i, for i < k+m */
	uint32_t crcs[64];   /* payload crc32c of fragment i */
};
#define META_STRIPE_F_DEGRADED 0x1u /* committed with fewer than k+m fragments */

struct meta_server {
	uint16_t id;         /* stable, never reused */
	char url[256];       /* base URL, e.g. http://127.0.0.1:9000 */
	char zone[64];       /* failure domain label, may be "" */
	uint64_t weight;     /* relative weight (capacity in bytes, or 1) */
	uint32_t flags;      /* META_SERVER_F_* */
};
/* Taken out of the list: it gets no new fragments and is never read; the fragments the stripe
 * maps still place on it count as lost until the scrubber has rebuilt them elsewhere. The
 * entry stays so that its id is never given to another server. */
#define META_SERVER_F_RETIRED 0x1u
/* Given a new address (an empty replacement, say): the fragments the stripe maps place on it
 * may be missing there until a complete scrub has rebuilt them, which clears the flag. */
#define META_SERVER_F_REFILL 0x2u
#define META_SERVER_F_ALL (META_SERVER_F_RETIRED | META_SERVER_F_REFILL)

struct meta_superblock {
	uint32_t format_version;
	uint8_t fs_uuid[16];
	uint32_t k, m;
	uint32_t stripe_size;   /* bytes of file data per stripe, a multiple of k*64 */
	uint32_t write_quorum;  /* fragments that must be stored, k <= q <= k+m */
	uint32_t inline_max;    /* files up to this size keep their data in the metadata
	                           (0 = never; at most META_INLINE_MAX) */
	uint64_t create_time_ns;
	char bucket[64];
	char region[32];
	char credentials[256];  /* where the client's access key lives: "file:credentials"
	                           (relative to the metadata directory) or "env" */
	uint32_t n_servers;
	struct meta_server servers[META_MAX_SERVERS];
};

/* Whether sb lists server id as active (present and not retired). */
bool meta_server_active(const struct meta_superblock *sb, uint16_t id);
/* The entry of server id in sb, or NULL. */
const struct meta_server *meta_server_find(const struct meta_superblock *sb, uint16_t id);
/* Parses a server specification "URL[,zone=Z][,weight=W]" (what tessera-mkfs --server and
 * `tessera server add` take) into *ret (id 0, flags 0; weight 1 unless given). The URL must
 * start with http:// or https://, have a host, no spaces, control characters, '?' or '#', and
 * fit the field; trailing slashes are dropped; a zone is [A-Za-z0-9._-]{1,63}; a weight is a
 * size (tparse_size, > 0). Returns 0, or -EINVAL with a one-line reason in err. */
int meta_server_parse(const char *spec, struct meta_server *ret, char *err, size_t err_size);

/* One fragment to delete: an old stripe version or a removed file's data. */
struct meta_garbage {
	uint64_t ino, stripe, version;
	uint8_t index;
	uint16_t server;
};

/* ---- key encoding (exposed for tests) ---- */

/* Largest xattr name and value the store accepts (Linux XATTR_NAME_MAX, XATTR_SIZE_MAX). */
#define META_XATTR_NAME_MAX 255
#define META_XATTR_SIZE_MAX 65536

/* Writes the dentries key for (parent, name) into out (8 + name_len bytes). */
size_t meta_dentry_key(uint8_t *out, uint64_t parent, const char *name, size_t name_len);
/* Writes the stripes key (16 bytes). */
void meta_stripe_key(uint8_t out[16], uint64_t ino, uint64_t stripe);

/* Record codecs (exposed for tests). Every record starts with a record-version byte.
 * Encoders return the encoded length; when size is smaller they write nothing and still return
 * the length needed. meta_stripe_encode() returns 0 for an invalid record (k == 0, k+m > 64)
 * and meta_superblock_encode() for an invalid superblock (see meta_superblock_decode()).
 * Decoders return 0 and *ret, or -EBADMSG on a short, long or inconsistent record. */
#define META_INODE_ENC_SIZE 85
#define META_STRIPE_ENC_MAX (31 + 64 * 6)
#define META_SUPERBLOCK_ENC_MAX (45 + 4 + 64 + 32 + 257 + 2 + META_MAX_SERVERS * 335 + 4)
size_t meta_inode_encode(const struct meta_inode *in, uint8_t *out, size_t size);
int meta_inode_decode(const uint8_t *buf, size_t len, struct meta_inode *ret);
size_t meta_stripe_encode(const struct meta_stripe *s, uint8_t *out, size_t size);
int meta_stripe_decode(const uint8_t *buf, size_t len, struct meta_stripe *ret);

/* ---- open / create ---- */

/* Creates a new filesystem in dir (created if missing; must not contain one unless force,
 * in which case the old database is destroyed). Writes the superblock and the root inode
 * (mode 0755 | S_IFDIR, owned by root_uid/root_gid) and the inode counter in one synced
 * batch. Returns 0, -EEXIST (a filesystem is there and !force), -EINVAL (sb does not pass
 * meta_superblock_decode()'s checks), -EBUSY (the existing database is open elsewhere),
 * -EIO, -errno. */
int meta_mkfs(const char *dir, const struct meta_superblock *sb, uint32_t root_uid,
	      uint32_t root_gid, bool force);

/* Opens an existing filesystem. Returns 0 and *ret (free with meta_close()), -ENOENT when
 * there is no filesystem, -EBADMSG on a damaged superblock, -EBUSY when another process has
 * it open (RocksDB's LOCK), -errno. */
int meta_open(const char *dir, struct meta **ret);
/* Opens an existing filesystem for reading only, also while a daemon has it open (RocksDB's
 * read-only mode takes no lock): a view of the moment of opening. Every write fails (-EIO).
 * For status reports. Returns as meta_open(), never -EBUSY. */
int meta_open_read_only(const char *dir, struct meta **ret);
void meta_close(struct meta *m);

/* The superblock read at open (borrowed, valid until meta_close()). */
const struct meta_superblock *meta_superblock(const struct meta *m);
/* Replaces the superblock (a synced write) and the copy meta_superblock() returns, for
 * administrative changes of the server list. Only fields that do not change the meaning of
 * stored data may differ: the uuid, k, m, stripe size, format version, creation time and
 * bucket must stay; a server id of the old list must stay in the new one (ids are never
 * reused: retire a server with META_SERVER_F_RETIRED instead of dropping it). Not safe while
 * other threads read the borrowed superblock (an offline tool's call). Returns 0, -EINVAL
 * (sb invalid or changes a fixed field or drops an id), -ENOMEM, -EIO. */
int meta_superblock_update(struct meta *m, const struct meta_superblock *sb);
/* The metadata directory given to meta_open() (borrowed, valid until meta_close()). */
const char *meta_dir(const struct meta *m);

/* Reads the S3 access key that sb->credentials names: "file:NAME" (relative to meta_dir unless
 * absolute; the file holds "ACCESS_KEY SECRET_KEY", at most 4 KiB) or "env"
 * (TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY). Shared by tesserafs and tessera-scrub. Writes
 * both NUL-terminated keys (only on success). Returns 0, -errno reading the file
 * (-ENOENT, -EACCES...), -ENAMETOOLONG (the path), -EINVAL (no key pair, or a key too long
 * for its buffer). Logs nothing. */
int meta_load_credentials(const char *meta_dir, const struct meta_superblock *sb,
			  char *access_key, size_t access_key_size, char *secret_key,
			  size_t secret_key_size);

/* Backs the metadata up into dest, a new directory (it must not exist; its parent must): a
 * consistent RocksDB checkpoint of this moment (hard links where dest is on the same
 * filesystem, copies elsewhere) plus the credentials file when the superblock names one
 * relative to the metadata directory. Everything is fsynced, built under a temporary name
 * beside dest and renamed at the end, so dest is either absent or a whole metadata directory
 * that tesserafs can mount. Safe while the filesystem is in use (commits go on). Returns 0,
 * -EEXIST, -ENOENT (no parent), -ENAMETOOLONG, -EIO, -errno. */
int meta_backup(struct meta *m, const char *dest);

/* ---- reads ---- */

/* Returns 0 and *ret, -ENOENT, -EIO. */
int meta_inode_get(struct meta *m, uint64_t ino, struct meta_inode *ret);
/* Looks up name in directory parent. Returns 0 and *ret_ino (and *ret_mode, may be NULL:
 * the S_IFMT bits), -ENOENT, -ENAMETOOLONG (name_len > META_NAME_MAX), -EIO. */
int meta_dentry_get(struct meta *m, uint64_t parent, const char *name, size_t name_len,
		    uint64_t *ret_ino, uint32_t *ret_mode);

/* Directory iteration in name order, starting after `after` (NULL/len 0 = from the start).
 * The callback gets each entry (name is NUL-terminated, valid during the call only);
 * it returns 0 to continue, > 0 to stop (not an error),
 * < 0 to stop with that error. Returns 0, the callback's negative value, or -EIO. */
typedef int (*meta_dentry_fn)(void *ctx, const char *name, size_t name_len, uint64_t ino,
			      uint32_t mode);
int meta_dentry_list(struct meta *m, uint64_t parent, const char *after, size_t after_len,
		     meta_dentry_fn fn, void *ctx);
/* Returns 1 when the directory has at least one entry, 0 when empty, -EIO. */
int meta_dir_has_entries(struct meta *m, uint64_t parent);

/* Returns 0 and *ret, -ENOENT (a hole), -EIO. */
int meta_stripe_get(struct meta *m, uint64_t ino, uint64_t stripe, struct meta_stripe *ret);
/* Iterates the stripes of ino with index >= from, in order. Callback as above. */
typedef int (*meta_stripe_fn)(void *ctx, uint64_t stripe, const struct meta_stripe *s);
int meta_stripe_list(struct meta *m, uint64_t ino, uint64_t from, meta_stripe_fn fn, void *ctx);

/* Iterates every directory entry of the filesystem in (parent, name) order, for the
 * scrubber's search for entries whose directory is gone. Callback protocol as
 * meta_dentry_list(). */
typedef int (*meta_dentry_all_fn)(void *ctx, uint64_t parent, const char *name,
				  size_t name_len, uint64_t ino, uint32_t mode);
int meta_dentry_list_all(struct meta *m, meta_dentry_all_fn fn, void *ctx);

/* Iterates every stripe record of the filesystem in (ino, stripe) order (a record that does not
 * decode: -EIO). Callback protocol as meta_dentry_list(). */
typedef int (*meta_stripe_all_fn)(void *ctx, uint64_t ino, uint64_t stripe,
				  const struct meta_stripe *s);
int meta_stripe_list_all(struct meta *m, meta_stripe_all_fn fn, void *ctx);

/* Iterates every inode (for the scrubber; a mount reads the orphan index instead). */
typedef int (*meta_inode_fn)(void *ctx, const struct meta_inode *in);
int meta_inode_list(struct meta *m, meta_inode_fn fn, void *ctx);

/* Iterates the garbage queue in order. */
typedef int (*meta_garbage_fn)(void *ctx, uint64_t seq, const struct meta_garbage *g);
int meta_garbage_list(struct meta *m, meta_garbage_fn fn, void *ctx);

/* Allocates a fresh inode number (persistent counter; numbers are never reused, also across
 * a crash: ranges are reserved with a synced write and handed out from memory, so numbers
 * after a reopen are larger than every number handed out before). Thread-safe.
 * Returns 0 and *ret, or -EIO. The counter is advanced in its own small write. */
int meta_alloc_ino(struct meta *m, uint64_t *ret);

/* Reads extended attribute name of ino. Returns 0 and *ret_len (the value length), copying
 * the value into buf when buf != NULL; -ERANGE when buf != NULL and size < the length,
 * -ENODATA when absent, -ENAMETOOLONG (name_len > META_XATTR_NAME_MAX), -EIO. */
int meta_xattr_get(struct meta *m, uint64_t ino, const char *name, size_t name_len, void *buf,
		   size_t size, size_t *ret_len);
/* Iterates the xattrs of ino in name order (name NUL-terminated; both borrowed for the call).
 * Callback protocol as meta_dentry_list(). */
typedef int (*meta_xattr_fn)(void *ctx, const char *name, size_t name_len, const void *value,
			     size_t value_len);
int meta_xattr_list(struct meta *m, uint64_t ino, meta_xattr_fn fn, void *ctx);

/* Largest inline value (small-file contents, symlink target). */
#define META_INLINE_MAX (64u << 10)

/* Chunk sums: the crc32c of every META_CHUNK_SIZE bytes of each data fragment's payload (the
 * last chunk of a fragment may be shorter), so that part of a fragment can be read and checked
 * without fetching it whole. Kept per stripe with the version they describe; deleted with the
 * stripe record (meta_batch_stripe_del). */
#define META_CHUNK_SIZE (64u << 10)
#define META_CHUNKS_PER_FRAG_MAX 1024

/* The crc of chunk `chunk` of data fragment `frag` of the given stripe version. Returns 0 and
 * *ret, -ENOENT (no sums, or sums of another version), -EIO. */
int meta_chunk_crc_get(struct meta *m, uint64_t ino, uint64_t stripe, uint64_t version,
		       unsigned frag, unsigned chunk, uint32_t *ret);

/* Reads the inline value of ino. Returns 0 and *ret_len, copying into buf when buf != NULL;
 * -ERANGE when buf != NULL and size < the length, -ENOENT when absent, -EIO. */
int meta_inline_get(struct meta *m, uint64_t ino, void *buf, size_t size, size_t *ret_len);

/* ---- batches ---- */

/* Returns a new empty batch (free with meta_batch_free()), or NULL when out of memory. */
struct meta_batch *meta_batch_new(struct meta *m);
void meta_batch_free(struct meta_batch *b);
void meta_batch_inode_put(struct meta_batch *b, const struct meta_inode *in);
void meta_batch_inode_del(struct meta_batch *b, uint64_t ino);
void meta_batch_dentry_put(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len, uint64_t ino, uint32_t mode);
void meta_batch_dentry_del(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len);
void meta_batch_stripe_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   const struct meta_stripe *s);
/* Deletes the stripe record and its chunk sums. */
void meta_batch_stripe_del(struct meta_batch *b, uint64_t ino, uint64_t stripe);
/* crcs: k * per_frag values, fragment-major (crcs[frag * per_frag + chunk]);
 * 1 <= per_frag <= META_CHUNKS_PER_FRAG_MAX. */
void meta_batch_chunks_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   uint64_t version, unsigned k, unsigned per_frag, const uint32_t *crcs);
/* name_len <= META_XATTR_NAME_MAX and value_len <= META_XATTR_SIZE_MAX (caller checks). */
void meta_batch_xattr_put(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len, const void *value, size_t value_len);
void meta_batch_xattr_del(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len);
/* Adds to b the deletion of every xattr of ino (read now: xattrs set after this call and
 * before the commit are not covered; the caller's lock prevents that). Returns 0 or -EIO
 * (b may then hold some of the deletions: do not commit it). */
int meta_batch_xattr_del_all(struct meta_batch *b, uint64_t ino);
/* len <= META_INLINE_MAX (a longer value poisons the batch: meta_commit() fails -EINVAL). */
void meta_batch_inline_put(struct meta_batch *b, uint64_t ino, const void *data, size_t len);
void meta_batch_inline_del(struct meta_batch *b, uint64_t ino);

/* Orphans: inodes with nlink 0 kept because they are still in use (open, or looked up by the
 * kernel). The fs layer indexes one in the batch that drops its last name and unindexes it in
 * the batch that removes it, so that a mount finds what a crash left without reading every
 * inode. Both are idempotent. */
void meta_batch_orphan_put(struct meta_batch *b, uint64_t ino);
void meta_batch_orphan_del(struct meta_batch *b, uint64_t ino);
/* Iterates the indexed orphans in inode order; on a filesystem made before the index existed
 * (no "orphan_index" key) every inode with nlink 0, from the inode table. An indexed inode may
 * be gone or linked again (a crash between the commits of a caller that does not keep the
 * index exact): the caller checks. Callback protocol as meta_dentry_list(). */
typedef int (*meta_orphan_fn)(void *ctx, uint64_t ino);
int meta_orphan_list(struct meta *m, meta_orphan_fn fn, void *ctx);
/* Appends to the garbage queue (the sequence number is allocated in memory at call time,
 * from an atomic counter initialised at open past the last queued entry). */
void meta_batch_garbage_add(struct meta_batch *b, const struct meta_garbage *g);
void meta_batch_garbage_del(struct meta_batch *b, uint64_t seq);

/* Applies the batch atomically. sync: fsync the RocksDB WAL before returning and, with a
 * journal attached, wait until the batch's journal record is durable on the servers (then its
 * error too: -EIO). Returns 0, -EIO, or -EINVAL when one of the batch_*() calls got an invalid record (name
 * length 0 or too long, inode 0, a stripe that fails meta_stripe_decode()'s checks): then
 * nothing of the batch is written. The batch may be freed or reused (it is cleared) afterwards. */
int meta_commit(struct meta *m, struct meta_batch *b, bool sync);
/* meta_commit() with the WAL synced but without waiting for the journal: the batch survives a
 * crash of this machine at once and reaches the servers within the journal's interval (for
 * close() and truncation, which POSIX does not make durable; fsync does). */
int meta_commit_local(struct meta *m, struct meta_batch *b);

/* Syncs the WAL (fsync/fdatasync of the filesystem) and, with a journal attached, waits until
 * every record committed so far is durable on the servers. Returns 0 or -EIO. */
int meta_sync(struct meta *m);
/* Syncs the WAL only (see meta_commit_local()). 0 or -EIO. */
int meta_sync_local(struct meta *m);

/* ---- the journal hook (src/journal is the journal; this is what it needs of the store) ----
 *
 * While a sink is attached, every committed batch gets the next sequence number and its
 * changes, encoded as "ops" (format in src/meta/meta_journal.c), go to sink->append in commit
 * order, under the store's journal lock (append must only copy and return). Synced commits and
 * meta_sync() then call sink->wait(seq), which returns once record seq and all before it are
 * durable (0) or cannot be (-EIO). The position (epoch, last sequence) is stored in every
 * journaled batch, so the database always knows which record it ends with. */
struct meta_journal_sink {
	void (*append)(void *ctx, uint64_t seq, const void *ops, size_t len);
	int (*wait)(void *ctx, uint64_t seq);
	void *ctx;
};
/* Attaches sink (copied) and stores epoch as the position's epoch (synced). 0 or -EIO. */
int meta_journal_attach(struct meta *m, const struct meta_journal_sink *sink, uint64_t epoch);
/* No sink from now on (before the journal is freed). */
void meta_journal_detach(struct meta *m);
/* The position: the epoch and the last sequence number (0, 0 when never journaled). */
void meta_journal_pos(struct meta *m, uint64_t *ret_epoch, uint64_t *ret_seq);
/* Waits for the sink until record seq (UINT64_MAX: the last one) is durable. 0 or -EIO. */
int meta_journal_wait(struct meta *m, uint64_t seq);
/* 0 when ops is a well-formed sequence of operations, else -EBADMSG. */
int meta_journal_ops_check(const void *ops, size_t len);
/* Applies journal ops as one atomic write (not synced) and, when seq > 0, sets the position
 * to (epoch, seq) in the same write. For the journal's replay and restore. 0, -EBADMSG, -EIO. */
int meta_journal_apply(struct meta *m, const void *ops, size_t len, uint64_t epoch, uint64_t seq);
/* Stores the position (synced). 0 or -EIO. */
int meta_journal_set_pos(struct meta *m, uint64_t epoch, uint64_t seq);
/* Dumps the whole store as ops at one consistent moment, the position of which *ret_epoch and
 * *ret_seq get: fn is called with chunks of about chunk bytes (0: 1 MiB), each whole
 * operations. The position key itself is left out. Returns 0, fn's negative value, -EIO. */
typedef int (*meta_dump_fn)(void *ctx, const void *ops, size_t len);
int meta_journal_dump(struct meta *m, size_t chunk, meta_dump_fn fn, void *ctx,
		      uint64_t *ret_epoch, uint64_t *ret_seq);
/* Whether a commit was made without the journal since the last meta_journal_gap_clear() (an
 * offline tool changed a journaled filesystem): 1, 0, or -EIO. The journal then writes a
 * checkpoint, after which it clears the mark. */
int meta_journal_gap(struct meta *m);
int meta_journal_gap_clear(struct meta *m);
/* Creates an empty database in dir (which must not hold one) for a restore to fill with
 * meta_journal_apply(); close it with meta_close(), then meta_open() checks what it holds.
 * 0, -EEXIST, -errno. */
int meta_create_empty(const char *dir, struct meta **ret);

/* ---- superblock encoding ----
 * The decoder checks: record version, length, trailing crc32c, k >= 1, k+m <= 64,
 * stripe_size a non-zero multiple of k*64, k <= write_quorum <= k+m, strings shorter than
 * their fields without NULs, n_servers <= META_MAX_SERVERS, non-empty URLs, unique ids.
 * format_version is only recorded; meta_open() rejects versions it does not know. */
size_t meta_superblock_encode(const struct meta_superblock *sb, uint8_t *out, size_t size);
int meta_superblock_decode(const uint8_t *buf, size_t len, struct meta_superblock *ret);

#endif
