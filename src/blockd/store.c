/*
 * blockd/store: objects as files under one or more data directories.
 *
 * Layout of each data directory DIR:
 *     DIR/objects/{bucket}/{key}   one regular file per object; the key's '/' are directories
 *     DIR/tmp/<16 hex>.tmp         objects being received; never visible as objects
 * The object's ETag (hex MD5 of its content) is kept in the xattr "user.tessera.etag" when the
 * filesystem supports user xattrs, else computed again when read.
 *
 * It does not speak HTTP, parse keys or check signatures: callers pass keys that passed
 * proto_key_validate() and buckets that passed proto_bucket_validate(), which guarantees that
 * every path built here stays below DIR/objects.
 *
 * Threads and locks: any thread may call any function. Committing and deleting one key are
 * serialised by a striped mutex (locks[fnv1a(bucket/key) % BD_LOCK_STRIPES]), so that the
 * "which directory holds this key" decision and the rename are atomic with respect to other
 * writers of the same key. Readers take no lock: rename() makes each switch atomic for them.
 *
 * Design notes: durability invariants.
 *
 *  1. An object is visible only complete. Bodies are written to DIR/tmp under a random
 *     name; only bd_put_commit() moves them into DIR/objects, with rename(2), which replaces
 *     an existing object atomically. A short body, a client that disconnects, a failed
 *     signature or digest check all end in bd_put_abort(), which unlinks the temp file.
 *  2. An acknowledged object survives a crash. bd_put_commit() returns 0 only after
 *     fsync(temp file) -> rename -> fsync(parent directory); every directory it creates on
 *     the way (mkdir -p) has its own entry fsynced in its parent first (mkdir_parents()).
 *     The caller answers 200 only after bd_put_commit() returned 0.
 *  3. One key, one file. A key that exists in some data directory is rewritten in that
 *     directory (bd_put_begin()); if two writers of a new key raced into two directories,
 *     the second commit removes the other copy under the key's lock. If a crash leaves two
 *     copies, bd_store_get() serves the newest (mtime) and the next put or delete cleans up.
 *  4. Crash leftovers are harmless and collected: temp files are removed by bd_store_open();
 *     empty directories left by deletes are pruned opportunistically (delete removes empty
 *     parents; a racing put re-creates them and retries its rename).
 *  5. Deletes are durable before they are acknowledged: unlink -> fsync(parent directory).
 *
 * State diagram of a put (the function behind each arrow):
 *   (none) -bd_put_begin-> receiving (tmp) -bd_put_write*-> received -bd_put_finish->
 *   digested -bd_put_commit-> durable and visible;  any state -bd_put_abort-> (none)
 */
#include "blockd_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tessera/common.h"

#define BD_LIST_MAX_DEPTH (PROTO_KEY_MAX / 2 + 2)

/* ---------------------------------------------------------------- helpers */

static int path_join(char *out, size_t size, const char *a, const char *b, const char *c)
{
	int n = c ? snprintf(out, size, "%s/%s/%s", a, b, c) : snprintf(out, size, "%s/%s", a, b);

	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

static int obj_path(const struct bd_store *s, unsigned dir, const char *bucket, const char *key,
		    char out[PATH_MAX])
{
	return path_join(out, PATH_MAX, s->dirs[dir].objects, bucket, key);
}

static pthread_mutex_t *key_lock(struct bd_store *s, const char *bucket, const char *key)
{
	uint32_t h = 2166136261u;

	for (const char *p = bucket; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ '/') * 16777619u;
	for (const char *p = key; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return &s->locks[h % BD_LOCK_STRIPES];
}

/* fsync the directory that contains path. */
static int fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash)
		return tfsync_dir(".");
	if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	return tfsync_dir(dir);
}

/* Creates the missing directories between base (which exists) and the file path, fsyncing
 * each new directory's parent (invariant 2). */
static int mkdir_parents(const char *base, const char *path)
{
	char buf[PATH_MAX];
	size_t blen = strlen(base);
	int r;

	if (strlen(path) >= sizeof(buf) || strncmp(path, base, blen) != 0 || path[blen] != '/')
		return -EINVAL;
	strcpy(buf, path);
	for (char *p = buf + blen + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(buf, 0755) == 0) {
			if ((r = fsync_parent(buf)) < 0)
				return r;
		} else if (errno == EEXIST) {
			struct stat st;
			if (stat(buf, &st) < 0)
				return -errno;
			if (!S_ISDIR(st.st_mode))
				return -ENOTDIR; /* a key is a prefix of this one */
		} else {
			return -errno;
		}
		*p = '/';
	}
	return 0;
}

/* Removes now-empty directories from dirname(path) up to, not including, stop. */
static void prune_empty_parents(const char *stop, const char *path)
{
	char buf[PATH_MAX];
	size_t slen = strlen(stop);
	char *slash;

	if (strlen(path) >= sizeof(buf))
		return;
	strcpy(buf, path);
	while ((slash = strrchr(buf, '/')) != NULL && (size_t)(slash - buf) > slen) {
		*slash = '\0';
		if (rmdir(buf) < 0)
			break;
		(void)fsync_parent(buf);
	}
}

static int md5_fd(int fd, uint64_t size, char out[33])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *buf = malloc(1 << 16);
	uint64_t off = 0;
	int r = 0;

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
		r = -ENOMEM;
		goto out;
	}
	while (off < size) {
		ssize_t n = pread(fd, buf, (size_t)TESSERA_MIN(size - off, (uint64_t)(1 << 16)),
				  (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += (uint64_t)n;
	}
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 16) {
		r = -EIO;
		goto out;
	}
	thex_encode(md, 16, out);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return r;
}

/* ---------------------------------------------------------------- open / close */

static int clean_tmp(const char *tmp)
{
	DIR *d = opendir(tmp);
	struct dirent *de;
	int r = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
			r = -errno;
			break;
		}
		tlog_debug("removed leftover temp file '%s/%s'", tmp, de->d_name);
	}
	closedir(d);
	return r;
}

/* Counts regular files below the directory fd (consumed) and adds their sizes to *bytes. */
static int64_t count_files(int fd, unsigned depth, int64_t *bytes)
{
	DIR *d = fdopendir(fd);
	struct dirent *de;
	int64_t n = 0;

	if (!d) {
		close(fd);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode)) {
			n++;
			*bytes += st.st_size;
		} else if (S_ISDIR(st.st_mode) && depth < BD_LIST_MAX_DEPTH) {
			int sub = openat(dirfd(d), de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				n += count_files(sub, depth + 1, bytes);
		}
	}
	closedir(d);
	return n;
}

int bd_store_open(struct bd_store *s, const char (*dirs)[4096], unsigned n_dirs,
		  const char **ret_bad_dir)
{
	unsigned i = 0;
	int r = 0;

	memset(s, 0, sizeof(*s));
	if (n_dirs == 0 || n_dirs > BLOCKD_MAX_DIRS)
		return -EINVAL;
	for (unsigned l = 0; l < BD_LOCK_STRIPES; l++)
		pthread_mutex_init(&s->locks[l], NULL);
	s->n_dirs = n_dirs;
	for (i = 0; i < n_dirs; i++) {
		struct bd_dir *d = &s->dirs[i];
		size_t len = strnlen(dirs[i], 4096);

		if (len == 0 || len >= sizeof(d->root) - 16) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		memcpy(d->root, dirs[i], len + 1);
		while (len > 1 && d->root[len - 1] == '/')
			d->root[--len] = '\0';
		if ((r = path_join(d->objects, sizeof(d->objects), d->root, "objects", NULL)) < 0 ||
		    (r = path_join(d->tmp, sizeof(d->tmp), d->root, "tmp", NULL)) < 0)
			goto fail;
		if ((r = tmkdir_p(d->objects, 0755)) < 0 || (r = tmkdir_p(d->tmp, 0700)) < 0 ||
		    (r = clean_tmp(d->tmp)) < 0 || (r = tfsync_dir(d->tmp)) < 0 ||
		    (r = tfsync_dir(d->root)) < 0)
			goto fail;
		int fd = open(d->objects, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			goto fail;
		}
		int64_t bytes = 0;
		d->n_objects = count_files(fd, 0, &bytes);
		d->n_bytes = bytes;
		s->objects += d->n_objects;
	}
	return 0;
fail:
	if (ret_bad_dir)
		*ret_bad_dir = dirs[i];
	bd_store_close(s);
	return r;
}

void bd_store_close(struct bd_store *s)
{
	for (unsigned i = 0; i < BD_LOCK_STRIPES; i++)
		pthread_mutex_destroy(&s->locks[i]);
}

/* ---------------------------------------------------------------- put */

/* The directory for a new object: the one holding the key, else weighted by free space. */
static int choose_dir(struct bd_store *s, const char *bucket, const char *key, unsigned *ret)
{
	uint64_t free_b[BLOCKD_MAX_DIRS], total = 0, pick;
	char path[PATH_MAX];
	struct stat st;
	int r;

	for (unsigned i = 0; i < s->n_dirs; i++) {
		if ((r = obj_path(s, i, bucket, key, path)) < 0)
			return r;
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			*ret = i;
			return 0;
		}
	}
	if (s->n_dirs == 1) {
		*ret = 0;
		return 0;
	}
	for (unsigned i = 0; i < s->n_dirs; i++) {
		struct statvfs sv;
		free_b[i] = statvfs(s->dirs[i].objects, &sv) == 0 ?
				    (uint64_t)sv.f_bavail * sv.f_frsize : 0;
		total += free_b[i];
	}
	if (total == 0) {
		*ret = 0; /* everything is full: the write reports ENOSPC */
		return 0;
	}
	if (trandom_bytes(&pick, sizeof(pick)) < 0)
		pick = tclock_monotonic_ns();
	pick %= total;
	for (unsigned i = 0; i < s->n_dirs; i++) {
		if (pick < free_b[i]) {
			*ret = i;
			return 0;
		}
		pick -= free_b[i];
	}
	*ret = s->n_dirs - 1;
	return 0;
}

int bd_put_begin(struct bd_store *s, const char *bucket, const char *key, bool want_sha256,
		 struct bd_put *p)
{
	uint8_t rnd[8];
	char name[32];
	int r;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	p->store = s;
	if ((r = choose_dir(s, bucket, key, &p->dir)) < 0)
		return r;
	if ((r = trandom_bytes(rnd, sizeof(rnd))) < 0)
		return r;
	thex_encode(rnd, sizeof(rnd), name);
	strcat(name, ".tmp");
	if ((r = path_join(p->tmp_path, sizeof(p->tmp_path), s->dirs[p->dir].tmp, name, NULL)) < 0)
		return r;
	p->md5 = EVP_MD_CTX_new();
	if (want_sha256)
		p->sha256 = EVP_MD_CTX_new();
	if (!p->md5 || (want_sha256 && !p->sha256) || !EVP_DigestInit_ex(p->md5, EVP_md5(), NULL) ||
	    (p->sha256 && !EVP_DigestInit_ex(p->sha256, EVP_sha256(), NULL))) {
		r = -ENOMEM;
		goto fail;
	}
	p->fd = open(p->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (p->fd < 0) {
		r = -errno;
		goto fail;
	}
	return 0;
fail:
	p->tmp_path[0] = '\0';
	bd_put_abort(p);
	return r;
}

int bd_put_write(struct bd_put *p, const void *buf, size_t len)
{
	const char *c = buf;

	if (p->fd < 0)
		return -EBADF;
	EVP_DigestUpdate(p->md5, buf, len);
	if (p->sha256)
		EVP_DigestUpdate(p->sha256, buf, len);
	while (len > 0) {
		ssize_t n = write(p->fd, c, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += n;
		len -= (size_t)n;
		p->size += (uint64_t)n;
	}
	return 0;
}

int bd_put_finish(struct bd_put *p)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_DigestFinal_ex(p->md5, md, &mdlen) || mdlen != 16)
		return -EIO;
	thex_encode(md, 16, p->md5_hex);
	if (p->sha256) {
		if (!EVP_DigestFinal_ex(p->sha256, md, &mdlen) || mdlen != 32)
			return -EIO;
		thex_encode(md, 32, p->sha256_hex);
	}
	return 0;
}

int bd_put_commit(struct bd_put *p, const char *bucket, const char *key)
{
	struct bd_store *s = p->store;
	pthread_mutex_t *lock = key_lock(s, bucket, key);
	char path[PATH_MAX], other[PATH_MAX];
	struct stat st;
	bool existed = false;
	int r, fd = p->fd;

	if (fd < 0 || !p->md5_hex[0])
		return -EINVAL;
	if (fsetxattr(fd, BD_ETAG_XATTR, p->md5_hex, 32, 0) < 0 && errno != ENOTSUP &&
	    errno != EOPNOTSUPP) {
		r = -errno;
		goto fail;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	p->fd = -1;
	if (close(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = obj_path(s, p->dir, bucket, key, path)) < 0)
		goto fail;

	pthread_mutex_lock(lock);
	existed = lstat(path, &st) == 0 && S_ISREG(st.st_mode);
	bool here = existed;
	int64_t old_size = existed ? st.st_size : 0;
	for (int attempt = 0;; attempt++) {
		if ((r = mkdir_parents(s->dirs[p->dir].objects, path)) < 0)
			break;
		if (rename(p->tmp_path, path) == 0) {
			r = 0;
			break;
		}
		r = -errno;
		/* ENOENT: a delete pruned a parent we had just created; create it again. */
		if (r != -ENOENT || attempt >= 3)
			break;
	}
	if (r == 0) {
		p->tmp_path[0] = '\0';
		r = fsync_parent(path);
	}
	if (r == 0) {
		for (unsigned i = 0; i < s->n_dirs; i++) {
			if (i == p->dir || obj_path(s, i, bucket, key, other) < 0)
				continue;
			struct stat ost;
			bool had = lstat(other, &ost) == 0 && S_ISREG(ost.st_mode);
			if (had && unlink(other) == 0) {
				existed = true;
				s->dirs[i].n_objects--;
				s->dirs[i].n_bytes -= ost.st_size;
				(void)fsync_parent(other);
			}
		}
		if (!here)
			s->dirs[p->dir].n_objects++;
		s->dirs[p->dir].n_bytes += (int64_t)p->size - old_size;
		if (!existed)
			s->objects++;
	}
	pthread_mutex_unlock(lock);
	if (r < 0)
		goto fail;
	bd_put_abort(p); /* frees the digests; the temp file is gone */
	return 0;
fail:
	bd_put_abort(p);
	return r;
}

void bd_put_abort(struct bd_put *p)
{
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	if (p->tmp_path[0]) {
		unlink(p->tmp_path);
		p->tmp_path[0] = '\0';
	}
	EVP_MD_CTX_free(p->md5);
	EVP_MD_CTX_free(p->sha256);
	p->md5 = NULL;
	p->sha256 = NULL;
}

/* ---------------------------------------------------------------- get / delete / buckets */

int bd_store_bucket_exists(struct bd_store *s, const char *bucket)
{
	char path[PATH_MAX];
	struct stat st;

	for (unsigned i = 0; i < s->n_dirs; i++)
		if (path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL) == 0 &&
		    stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
	return -BD_ENOBUCKET;
}

int bd_store_bucket_create(struct bd_store *s, const char *bucket)
{
	char path[PATH_MAX];
	int r;

	for (unsigned i = 0; i < s->n_dirs; i++) {
		if ((r = path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL)) < 0)
			return r;
		if (mkdir(path, 0755) == 0) {
			if ((r = tfsync_dir(s->dirs[i].objects)) < 0)
				return r;
		} else if (errno != EEXIST) {
			return -errno;
		}
	}
	return 0;
}

int bd_store_get(struct bd_store *s, const char *bucket, const char *key, struct bd_object *ret)
{
	struct bd_object best = { .fd = -1 };
	struct timespec best_m = { 0 };
	char path[PATH_MAX];
	int r, err = 0;

	for (unsigned i = 0; i < s->n_dirs; i++) {
		struct stat st;
		int fd;

		if ((r = obj_path(s, i, bucket, key, path)) < 0)
			return r;
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP)
				err = -errno;
			continue;
		}
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(fd); /* a directory: only a prefix of other keys */
			continue;
		}
		if (best.fd >= 0) {
			if (st.st_mtim.tv_sec < best_m.tv_sec ||
			    (st.st_mtim.tv_sec == best_m.tv_sec &&
			     st.st_mtim.tv_nsec <= best_m.tv_nsec)) {
				close(fd);
				continue;
			}
			close(best.fd);
		}
		best.fd = fd;
		best.size = (uint64_t)st.st_size;
		best.mtime_s = st.st_mtim.tv_sec;
		best_m = st.st_mtim;
	}
	if (best.fd < 0) {
		if (err)
			return err;
		return bd_store_bucket_exists(s, bucket) < 0 ? -BD_ENOBUCKET : -ENOENT;
	}
	ssize_t n = fgetxattr(best.fd, BD_ETAG_XATTR, best.etag, 32);
	best.etag[n == 32 ? 32 : 0] = '\0';
	if (n != 32 && (r = md5_fd(best.fd, best.size, best.etag)) < 0) {
		close(best.fd);
		return r;
	}
	*ret = best;
	return 0;
}

int bd_store_delete(struct bd_store *s, const char *bucket, const char *key)
{
	pthread_mutex_t *lock = key_lock(s, bucket, key);
	char path[PATH_MAX], stop[PATH_MAX];
	bool removed = false;
	int r = 0;

	pthread_mutex_lock(lock);
	for (unsigned i = 0; i < s->n_dirs; i++) {
		if ((r = obj_path(s, i, bucket, key, path)) < 0 ||
		    (r = path_join(stop, sizeof(stop), s->dirs[i].objects, bucket, NULL)) < 0)
			break;
		struct stat st;
		if (lstat(path, &st) < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			r = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue; /* a directory: the prefix of other keys, not an object */
		if (unlink(path) < 0) {
			if (errno == ENOENT || errno == ENOTDIR || errno == EISDIR)
				continue;
			r = -errno;
			break;
		}
		removed = true;
		s->dirs[i].n_objects--;
		s->dirs[i].n_bytes -= st.st_size;
		if ((r = fsync_parent(path)) < 0)
			break;
		prune_empty_parents(stop, path);
	}
	if (removed)
		s->objects--;
	pthread_mutex_unlock(lock);
	return r;
}

/* ---------------------------------------------------------------- list */

struct list_state {
	const char *prefix;
	const char *start_after;
	unsigned want;          /* max_keys + 1: one more tells whether the list is truncated */
	struct bd_list_entry *e;
	unsigned n;
	char rel[PROTO_KEY_MAX + 2];
};

/* A directory entry; directories sort as "name/", so that a depth-first walk in this
 * order yields keys in byte order ("a-c" < "a/b" because '-' < '/'). */
struct name_ent {
	char name[257]; /* with a trailing '/' for directories */
	bool dir;
};

static int name_ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct name_ent *)a)->name, ((const struct name_ent *)b)->name);
}

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static int list_walk(int fd, struct list_state *st, size_t rel_len, unsigned depth)
{
	DIR *d = fdopendir(fd);
	struct name_ent *ents = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int r = 0;

	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat sb;
		size_t nl = strlen(de->d_name);

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    nl >= sizeof(ents[0].name) - 1 || rel_len + nl + 1 > PROTO_KEY_MAX)
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)))
			continue;
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 64;
			struct name_ent *ne = realloc(ents, ncap * sizeof(*ents));
			if (!ne) {
				r = -ENOMEM;
				goto out;
			}
			ents = ne;
			cap = ncap;
		}
		memcpy(ents[n].name, de->d_name, nl + 1);
		ents[n].dir = S_ISDIR(sb.st_mode);
		if (ents[n].dir)
			strcat(ents[n].name, "/");
		n++;
	}
	qsort(ents, n, sizeof(*ents), name_ent_cmp);
	for (size_t i = 0; i < n && st->n < st->want; i++) {
		size_t nl = strlen(ents[i].name) - (ents[i].dir ? 1 : 0);
		char *rel = st->rel;

		memcpy(rel + rel_len, ents[i].name, nl + 1 + (ents[i].dir ? 1 : 0));
		if (ents[i].dir) {
			if (depth >= BD_LIST_MAX_DEPTH)
				continue;
			ents[i].name[nl] = '\0';
			/* Descend only where the prefix and start_after allow a match. */
			if (!has_prefix(rel, st->prefix) && !has_prefix(st->prefix, rel))
				continue;
			if (!has_prefix(st->start_after, rel) && strcmp(rel, st->start_after) < 0)
				continue;
			int sub = openat(dirfd(d), ents[i].name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				continue;
			if ((r = list_walk(sub, st, rel_len + nl + 1, depth + 1)) < 0)
				goto out;
		} else {
			struct stat sb;
			if (!has_prefix(rel, st->prefix) || strcmp(rel, st->start_after) <= 0)
				continue;
			if (proto_key_validate(rel, rel_len + nl) < 0 ||
			    fstatat(dirfd(d), ents[i].name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			char *k = strdup(rel);
			if (!k) {
				r = -ENOMEM;
				goto out;
			}
			st->e[st->n].key = k;
			st->e[st->n].size = (uint64_t)sb.st_size;
			st->e[st->n].mtime_s = sb.st_mtim.tv_sec;
			st->n++;
		}
	}
out:
	st->rel[rel_len] = '\0';
	free(ents);
	closedir(d);
	return r;
}

static int list_entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct bd_list_entry *)a)->key, ((const struct bd_list_entry *)b)->key);
}

void bd_list_free(struct bd_list_entry *e, unsigned n)
{
	for (unsigned i = 0; e && i < n; i++)
		free(e[i].key);
	free(e);
}

int bd_store_list(struct bd_store *s, const char *bucket, const char *prefix,
		  const char *start_after, unsigned max_keys, struct bd_list_entry **ret,
		  unsigned *ret_n, bool *ret_truncated)
{
	struct bd_list_entry *all = NULL;
	unsigned n_all = 0, n_out = 0;
	bool found_bucket = false;
	char path[PATH_MAX];
	int r = 0;

	all = calloc((size_t)s->n_dirs * (max_keys + 1) + 1, sizeof(*all));
	if (!all)
		return -ENOMEM;
	for (unsigned i = 0; i < s->n_dirs; i++) {
		struct list_state st = { .prefix = prefix, .start_after = start_after,
					 .want = max_keys + 1, .e = all + n_all };
		if ((r = path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL)) < 0)
			goto out;
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			goto out;
		}
		found_bucket = true;
		r = list_walk(fd, &st, 0, 0);
		n_all += st.n;
		if (r < 0)
			goto out;
	}
	if (!found_bucket) {
		r = -BD_ENOBUCKET;
		goto out;
	}
	qsort(all, n_all, sizeof(*all), list_entry_cmp);
	for (unsigned i = 0; i < n_all; i++) {
		if (n_out > 0 && strcmp(all[n_out - 1].key, all[i].key) == 0) {
			free(all[i].key); /* crash leftover copy in a second directory */
			continue;
		}
		all[n_out++] = all[i];
	}
	*ret_truncated = n_out > max_keys;
	for (unsigned i = max_keys; i < n_out; i++)
		free(all[i].key);
	*ret_n = TESSERA_MIN(n_out, max_keys);
	*ret = all;
	return 0;
out:
	bd_list_free(all, n_all);
	return r;
}
