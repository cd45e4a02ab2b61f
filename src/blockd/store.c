/*
 * blockd/store: objects as files under one or more data directories.
 *
 * Layout of each data directory DIR:
 *     DIR/objects/{bucket}/{key}   one regular file per object; the key's '/' are directories
 *     DIR/tmp/<16 hex>.tmp         objects being received; never visible as objects
 *     DIR/tmp/<16 hex>.old         replaced versions waiting for the deleter thread
 * The object's ETag (hex MD5 of its content, or a unique "<32 hex>-1" tag when the client
 * asked for no MD5) is kept in the xattr "user.tessera.etag" when the filesystem supports
 * user xattrs (probed at open; without them the MD5 is always computed, and computed again
 * when read).
 *
 * Bodies of at least BD_DIRECT_MIN bytes (by Content-Length) are written with O_DIRECT from
 * an aligned staging buffer (the last block zero-padded, then the file truncated to its
 * size); smaller ones, and all of them where O_DIRECT is refused, through the page cache,
 * whose writeback is started every BD_WRITEBACK_STEP bytes while the body still arrives.
 *
 * It does not speak HTTP, parse keys or check signatures: callers pass keys that passed
 * proto_key_validate() and buckets that passed proto_bucket_validate(), which guarantees that
 * every path built here stays below DIR/objects.
 *
 * Threads and locks: any thread may call any function. Committing and deleting one key are
 * serialised by a striped mutex (locks[fnv1a(bucket/key) % BD_LOCK_STRIPES]), so that the
 * "which directory holds this key" decision and the rename are atomic with respect to other
 * writers of the same key. Readers take no lock: rename() makes each switch atomic for them.
 * Directory fsyncs are shared between threads (group commit, below: dsync slot mutexes and
 * condition variables, never taken while holding one another; a key lock may be held
 * around a dsync slot lock, never the reverse). Staging buffers: stage_lock. One deleter
 * thread unlinks replaced versions (deferred deletes, below; its queue: del_lock, a leaf
 * lock).
 *
 * Design notes: durability invariants.
 *
 *  1. An object is visible only complete. Bodies are written to DIR/tmp under a random
 *     name; only bd_put_commit() moves them into DIR/objects, with rename(2), which replaces
 *     an existing object atomically. A short body, a client that disconnects, a failed
 *     signature or digest check all end in bd_put_abort(), which unlinks the temp file.
 *  2. An acknowledged object survives a crash. bd_put_commit() returns 0 only after
 *     fdatasync(temp file) (the data and the size and block map needed to read it; the ETag
 *     xattr may be lost, see bd_store_get()) -> rename -> an fsync of the parent directory
 *     that started after the rename (group commit); every directory it creates on the way
 *     (mkdir -p) has its own entry fsynced in its parent first (mkdir_parents()), and so
 *     has a data directory that bd_store_open() made (mkdir_durable()). The caller
 *     answers 200 only after bd_put_commit() returned 0.
 *  3. One key, one file. A key that exists in some data directory is rewritten in that
 *     directory (bd_put_begin()); if two writers of a new key raced into two directories,
 *     the second commit removes the other copy under the key's lock, once its own rename is
 *     durable and only if its file is still the one in place (remove_other_copies()). If a
 *     crash leaves two copies, bd_store_get() serves the newest (mtime) and the next put or
 *     delete cleans up.
 *  4. Crash leftovers are harmless and collected: temp files, and replaced versions that
 *     the deleter thread had not removed yet, are in DIR/tmp and removed by bd_store_open();
 *     empty directories left by deletes are pruned opportunistically (delete removes empty
 *     parents; a racing put re-creates them and retries its rename).
 *  5. Deletes are durable before they are acknowledged: unlink -> an fsync of the parent
 *     directory that started after the unlink (group commit).
 *
 * State diagram of a put (the function behind each arrow):
 *   (none) -bd_put_begin-> receiving (tmp) -bd_put_write*-> received -bd_put_finish->
 *   digested -bd_put_commit-> durable and visible;  any state -bd_put_abort-> (none)
 * and of the version it replaces: object -aside_link+rename-> DIR/tmp/<hex>.old (unseen)
 *   -dsync_parent ok, del_later-> queued -del_thread-> unlinked
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

#define BD_WRITEBACK_STEP (256u << 10)

/* ---------------------------------------------------------------- helpers */

int bd_path_join(char *out, size_t size, const char *a, const char *b, const char *c)
{
	int n = c ? snprintf(out, size, "%s/%s/%s", a, b, c) : snprintf(out, size, "%s/%s", a, b);

	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

static int obj_path(const struct bd_store *s, unsigned dir, const char *bucket, const char *key,
		    char out[PATH_MAX])
{
	return bd_path_join(out, PATH_MAX, s->dirs[dir].objects, bucket, key);
}

static uint32_t fnv1a(const char *str, uint32_t h);

static pthread_mutex_t *key_lock(struct bd_store *s, const char *bucket, const char *key)
{
	uint32_t h = fnv1a(bucket, 2166136261u);

	h = (h ^ '/') * 16777619u;
	return &s->locks[fnv1a(key, h) % BD_LOCK_STRIPES];
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

/* ---------------------------------------------------------------- group commit */

/*
 * Group commit of directory fsyncs. A rename (or unlink) becomes durable with an fsync of
 * its directory that STARTS after it. Concurrent PUTs into one directory share such fsyncs:
 *
 *   - after its rename, a thread takes a ticket from the directory's entry (issued + 1), so
 *     every ticket is taken after the change it stands for;
 *   - the first thread that finds no fsync running becomes the leader: it notes
 *     target = issued (every ticket handed out so far), runs fsync(2) without the lock, then
 *     completes every waiter whose ticket <= target with the result, and wakes them;
 *   - a waiter whose ticket is above the running fsync's target waits for it to finish and
 *     then leads (or joins) the next one: an fsync already in progress when it took its
 *     ticket may have started before its rename, so it never counts.
 * Hence an fsync serves exactly the changes made before it started, a failed fsync fails
 * every change it was meant to cover (never retried on their behalf: after an error, Linux
 * may report a later fsync as clean), and at most two fsyncs are in one thread's way.
 * Entries live in BD_DSYNC_SLOTS hash slots (mutex + condition variable each) and are freed
 * when no thread holds them.
 */

static uint32_t fnv1a(const char *str, uint32_t h)
{
	for (const char *p = str; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

/* fsync(dir) on behalf of every change made in dir before the call. Returns 0 or -errno. */
static int dsync_dir(struct bd_store *s, const char *dir)
{
	struct bd_dsync_slot *slot = &s->dsync[fnv1a(dir, 2166136261u) % BD_DSYNC_SLOTS];
	struct bd_dsync_waiter me = { 0 };
	struct bd_dsync *e, **pe;
	int r;

	s->dir_syncs_wanted++;
	pthread_mutex_lock(&slot->lock);
	for (e = slot->list; e && strcmp(e->path, dir) != 0; e = e->next)
		;
	if (!e) {
		e = calloc(1, sizeof(*e) + strlen(dir) + 1);
		if (!e) {
			pthread_mutex_unlock(&slot->lock);
			s->dir_fsyncs++;
			return tfsync_dir(dir); /* no memory: sync alone */
		}
		strcpy(e->path, dir);
		e->next = slot->list;
		slot->list = e;
	}
	e->refs++;
	me.ticket = ++e->issued;
	me.next = e->waiters;
	e->waiters = &me;
	while (!me.done) {
		if (e->running) {
			pthread_cond_wait(&slot->cond, &slot->lock);
			continue;
		}
		/* Lead: this fsync starts after every ticket issued so far was taken. */
		uint64_t target = e->issued;
		e->running = true;
		pthread_mutex_unlock(&slot->lock);
		s->dir_fsyncs++;
		r = tfsync_dir(dir);
		pthread_mutex_lock(&slot->lock);
		e->running = false;
		for (struct bd_dsync_waiter **pw = &e->waiters; *pw;) {
			struct bd_dsync_waiter *w = *pw;
			if (w->ticket <= target) {
				w->done = true;
				w->result = r;
				*pw = w->next;
			} else {
				pw = &w->next;
			}
		}
		pthread_cond_broadcast(&slot->cond);
	}
	r = me.result;
	if (--e->refs == 0) {
		for (pe = &slot->list; *pe != e; pe = &(*pe)->next)
			;
		*pe = e->next;
		free(e);
	}
	pthread_mutex_unlock(&slot->lock);
	return r;
}

/* dsync_dir() of the directory that contains path. When that directory is gone, a delete in
 * a sibling key removed it once it was empty (prune_empty_parents(), after our change): the
 * nearest ancestor that still exists is synced instead, which makes the removal, and with it
 * our change, durable. */
static int dsync_parent(struct bd_store *s, const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int r;

	if (strlen(path) >= sizeof(dir))
		return -ENAMETOOLONG;
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return fsync_parent(path);
	*slash = '\0';
	while ((r = dsync_dir(s, dir)) == -ENOENT) {
		slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			break;
		*slash = '\0';
	}
	return r;
}

/* ---------------------------------------------------------------- deferred deletes */

/*
 * Deferred deletes. rename(2) over an existing object drops the old file's last link inside
 * the rename, and freeing its blocks can be slow (on a filesystem mounted with "discard",
 * 1-10 ms, in the PUT's path). So bd_put_commit() first links the old file into DIR/tmp
 * under a fresh name (aside_link()), renames, and once the put is durable queues the aside
 * name here; the deleter thread unlinks it. Until then the old content is reachable only
 * under DIR/tmp, which is never served and is emptied at start (invariant 4): a crash
 * before the delete leaves garbage, never the old version visible as the object.
 */

static void *del_thread(void *arg)
{
	struct bd_store *s = arg;
	struct bd_del *d;

	pthread_mutex_lock(&s->del_lock);
	for (;;) {
		while (!s->del_head && !s->del_stopping)
			pthread_cond_wait(&s->del_cond, &s->del_lock);
		if (!(d = s->del_head))
			break; /* stopping, and nothing left */
		s->del_head = d->next;
		if (!s->del_head)
			s->del_tail = NULL;
		s->del_queued--;
		pthread_mutex_unlock(&s->del_lock);
		if (unlink(d->path) < 0 && errno != ENOENT)
			tlog_debug("cannot remove '%s': %s", d->path, strerror(errno));
		free(d);
		pthread_mutex_lock(&s->del_lock);
	}
	pthread_mutex_unlock(&s->del_lock);
	return NULL;
}

/* Unlinks path on the deleter thread, or here when it cannot take it. */
static void del_later(struct bd_store *s, const char *path)
{
	struct bd_del *d = malloc(sizeof(*d) + strlen(path) + 1);

	if (d) {
		strcpy(d->path, path);
		d->next = NULL;
		pthread_mutex_lock(&s->del_lock);
		if (s->del_running && !s->del_stopping && s->del_queued < BD_DEL_MAX) {
			if (s->del_tail)
				s->del_tail->next = d;
			else
				s->del_head = d;
			s->del_tail = d;
			s->del_queued++;
			pthread_cond_signal(&s->del_cond);
			d = NULL;
			path = NULL;
		}
		pthread_mutex_unlock(&s->del_lock);
		free(d);
	}
	if (path)
		(void)unlink(path);
}

/* Links the object at path into the temp directory of data directory dir under a fresh name
 * (ret_aside), so that replacing it does not free it. Returns 0, or -errno when it could not
 * (the caller then replaces it the plain way). */
static int aside_link(struct bd_store *s, unsigned dir, const char *path, char ret_aside[PATH_MAX])
{
	uint8_t rnd[8];
	char name[32];
	int r;

	if ((r = trandom_bytes(rnd, sizeof(rnd))) < 0)
		return r;
	thex_encode(rnd, sizeof(rnd), name);
	strcat(name, ".old");
	if ((r = bd_path_join(ret_aside, PATH_MAX, s->dirs[dir].tmp, name, NULL)) < 0)
		return r;
	if (link(path, ret_aside) < 0)
		return -errno;
	return 0;
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

/* Makes directory dir and its missing parents, each new entry durable: its parent is fsynced
 * after the mkdir (a data directory blockd created must not vanish in a crash with the
 * objects it acknowledged). */
static int mkdir_durable(const char *dir, unsigned mode)
{
	char buf[PATH_MAX];
	struct stat st;
	char *slash;
	int r;

	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (errno != ENOENT)
		return -errno;
	if (strlen(dir) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, dir);
	slash = strrchr(buf, '/');
	if (slash && slash != buf) {
		*slash = '\0';
		if ((r = mkdir_durable(buf, mode)) < 0)
			return r;
	}
	if (mkdir(dir, mode) < 0 && errno != EEXIST)
		return -errno;
	return fsync_parent(dir);
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

/* Whether the filesystem of dir keeps user xattrs (where a non-MD5 ETag can be stored). */
static bool probe_xattr(const char *dir)
{
	char path[PATH_MAX];
	bool ok;
	int fd;

	if (bd_path_join(path, sizeof(path), dir, "xattr-probe", NULL) < 0)
		return false;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	ok = fsetxattr(fd, BD_ETAG_XATTR, "probe", 5, 0) == 0;
	close(fd);
	unlink(path);
	return ok;
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
	pthread_mutex_init(&s->stage_lock, NULL);
	pthread_mutex_init(&s->del_lock, NULL);
	pthread_cond_init(&s->del_cond, NULL);
	for (unsigned l = 0; l < BD_DSYNC_SLOTS; l++) {
		pthread_mutex_init(&s->dsync[l].lock, NULL);
		pthread_cond_init(&s->dsync[l].cond, NULL);
	}
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
		if ((r = bd_path_join(d->objects, sizeof(d->objects), d->root, "objects", NULL)) < 0 ||
		    (r = bd_path_join(d->tmp, sizeof(d->tmp), d->root, "tmp", NULL)) < 0)
			goto fail;
		if ((r = mkdir_durable(d->root, 0755)) < 0 ||
		    (r = tmkdir_p(d->objects, 0755)) < 0 || (r = tmkdir_p(d->tmp, 0700)) < 0 ||
		    (r = clean_tmp(d->tmp)) < 0 || (r = tfsync_dir(d->tmp)) < 0 ||
		    (r = tfsync_dir(d->root)) < 0)
			goto fail;
		d->xattr_ok = probe_xattr(d->tmp);
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
	if ((r = -pthread_create(&s->del_thread, NULL, del_thread, s)) < 0)
		goto fail;
	s->del_running = true;
	return 0;
fail:
	if (ret_bad_dir)
		*ret_bad_dir = dirs[i];
	bd_store_close(s);
	return r;
}

void bd_store_close(struct bd_store *s)
{
	if (s->del_running) {
		pthread_mutex_lock(&s->del_lock);
		s->del_stopping = true;
		pthread_cond_broadcast(&s->del_cond);
		pthread_mutex_unlock(&s->del_lock);
		pthread_join(s->del_thread, NULL);
		s->del_running = false;
	}
	pthread_mutex_destroy(&s->del_lock);
	pthread_cond_destroy(&s->del_cond);
	for (unsigned i = 0; i < BD_LOCK_STRIPES; i++)
		pthread_mutex_destroy(&s->locks[i]);
	for (unsigned i = 0; i < BD_DSYNC_SLOTS; i++) {
		pthread_mutex_destroy(&s->dsync[i].lock);
		pthread_cond_destroy(&s->dsync[i].cond);
	}
	while (s->n_stages > 0)
		free(s->stages[--s->n_stages]);
	pthread_mutex_destroy(&s->stage_lock);
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

/* Staging buffers of O_DIRECT puts (at most BD_STAGE_MAX in use; NULL beyond): a small free
 * list, so that a put does not map and fault in fresh memory. */
static void *stage_get(struct bd_store *s)
{
	void *buf = NULL;

	pthread_mutex_lock(&s->stage_lock);
	if (s->stages_out < BD_STAGE_MAX) {
		if (s->n_stages > 0)
			buf = s->stages[--s->n_stages];
		else if (posix_memalign(&buf, BD_STAGE_ALIGN, BD_STAGE_SIZE) != 0)
			buf = NULL;
		if (buf)
			s->stages_out++;
	}
	pthread_mutex_unlock(&s->stage_lock);
	return buf;
}

static void stage_put(struct bd_store *s, void *buf)
{
	if (!buf)
		return;
	pthread_mutex_lock(&s->stage_lock);
	s->stages_out--;
	if (s->n_stages < BD_STAGE_CACHE) {
		s->stages[s->n_stages++] = buf;
		buf = NULL;
	}
	pthread_mutex_unlock(&s->stage_lock);
	free(buf);
}

/* Writes the staged bytes of an O_DIRECT put: whole blocks, the last one padded with zeros
 * when final (bd_put_commit() then truncates the file to its size). A filesystem that
 * refuses the direct write (EINVAL) gets it through the page cache instead. */
static int stage_flush(struct bd_put *p, bool final)
{
	size_t len = p->staged;
	char *c = p->stage;

	if (final)
		len = (len + BD_STAGE_ALIGN - 1) / BD_STAGE_ALIGN * BD_STAGE_ALIGN;
	memset(p->stage + p->staged, 0, len - p->staged);
	while (len > 0) {
		ssize_t n = pwrite(p->fd, c, len, (off_t)p->written);
		if (n < 0 && errno == EINVAL && (fcntl(p->fd, F_GETFL) & O_DIRECT)) {
			int fl = fcntl(p->fd, F_GETFL);
			if (fl < 0 || fcntl(p->fd, F_SETFL, fl & ~O_DIRECT) < 0)
				return -EINVAL;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		c += n;
		len -= (size_t)n;
		p->written += (uint64_t)n;
	}
	p->staged = 0;
	return 0;
}

int bd_put_begin(struct bd_store *s, const char *bucket, const char *key,
		 uint64_t expected_size, bool want_md5, bool want_sha256, struct bd_put *p)
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
	if ((r = bd_path_join(p->tmp_path, sizeof(p->tmp_path), s->dirs[p->dir].tmp, name, NULL)) < 0)
		return r;
	/* Without an xattr to keep another tag in, the ETag must be the MD5 (bd_store_get()
	 * computes it again from the content). */
	if (want_md5 || !s->dirs[p->dir].xattr_ok)
		p->md5 = EVP_MD_CTX_new();
	if (want_sha256)
		p->sha256 = EVP_MD_CTX_new();
	if ((p->md5 == NULL) != !(want_md5 || !s->dirs[p->dir].xattr_ok) ||
	    (want_sha256 && !p->sha256) || (p->md5 && !EVP_DigestInit_ex(p->md5, EVP_md5(), NULL)) ||
	    (p->sha256 && !EVP_DigestInit_ex(p->sha256, EVP_sha256(), NULL))) {
		r = -ENOMEM;
		goto fail;
	}
	/* Large bodies bypass the page cache: copying them into it, allocating its pages and
	 * writing them back cost more CPU than the network and the digest together, and
	 * nothing is likely to read a fresh fragment soon. Where O_DIRECT is not supported
	 * (tmpfs), or no buffer is free, the page cache it is. */
	if (expected_size >= BD_DIRECT_MIN && (p->stage = stage_get(s)) != NULL) {
		p->fd = open(p->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0640);
		if (p->fd < 0 && errno == EINVAL) {
			stage_put(s, p->stage);
			p->stage = NULL;
		}
	}
	if (!p->stage)
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
	if (p->md5)
		EVP_DigestUpdate(p->md5, buf, len);
	if (p->sha256)
		EVP_DigestUpdate(p->sha256, buf, len);
	while (p->stage && len > 0) {
		size_t take = TESSERA_MIN(len, BD_STAGE_SIZE - p->staged);
		int r;
		memcpy(p->stage + p->staged, c, take);
		p->staged += take;
		p->size += take;
		c += take;
		len -= take;
		if (p->staged == BD_STAGE_SIZE && (r = stage_flush(p, false)) < 0)
			return r;
	}
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
	/* Start writing back what has arrived while the rest is still on its way, so that the
	 * fdatasync() of bd_put_commit() finds most of a large body already on disk. Advisory:
	 * errors are left to fdatasync(). */
	if (!p->stage && p->size - p->synced >= BD_WRITEBACK_STEP) {
		(void)sync_file_range(p->fd, (off_t)p->synced, (off_t)(p->size - p->synced),
				      SYNC_FILE_RANGE_WRITE);
		p->synced = p->size;
	}
	return 0;
}

int bd_put_finish(struct bd_put *p)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (p->md5) {
		if (!EVP_DigestFinal_ex(p->md5, md, &mdlen) || mdlen != 16)
			return -EIO;
		thex_encode(md, 16, p->md5_hex);
		memcpy(p->etag, p->md5_hex, 33);
	} else {
		/* Unique per stored version; the "-1" says "not an MD5" as S3's multipart
		 * ETags do, so that no client checks the body against it. */
		if (trandom_bytes(md, 16) < 0)
			return -EIO;
		thex_encode(md, 16, p->etag);
		strcat(p->etag, "-1");
	}
	if (p->sha256) {
		if (!EVP_DigestFinal_ex(p->sha256, md, &mdlen) || mdlen != 32)
			return -EIO;
		thex_encode(md, 32, p->sha256_hex);
	}
	return 0;
}

/* Removes the copies of bucket/key in data directories other than p->dir, provided the file
 * at path is still the one this put renamed there (ino): a later writer that replaced or
 * removed it did its own cleanup, and must not lose its copy to ours (invariant 3). */
static void remove_other_copies(struct bd_put *p, const char *bucket, const char *key,
				const char *path, const struct stat *mine, bool *existed)
{
	struct bd_store *s = p->store;
	char other[PATH_MAX];
	struct stat st;

	if (lstat(path, &st) < 0 || st.st_ino != mine->st_ino || st.st_dev != mine->st_dev)
		return;
	for (unsigned i = 0; i < s->n_dirs; i++) {
		if (i == p->dir || obj_path(s, i, bucket, key, other) < 0)
			continue;
		struct stat ost;
		bool had = lstat(other, &ost) == 0 && S_ISREG(ost.st_mode);
		if (had && unlink(other) == 0) {
			*existed = true;
			s->dirs[i].n_objects--;
			s->dirs[i].n_bytes -= ost.st_size;
			(void)dsync_parent(s, other);
		}
	}
}

int bd_put_commit(struct bd_put *p, const char *bucket, const char *key)
{
	struct bd_store *s = p->store;
	pthread_mutex_t *lock = key_lock(s, bucket, key);
	char path[PATH_MAX], aside[PATH_MAX];
	struct stat st, mine;
	bool existed = false, have_aside = false;
	int r, fd = p->fd;

	if (fd < 0 || !p->etag[0])
		return -EINVAL;
	if (p->stage) {
		if ((r = stage_flush(p, true)) < 0)
			goto fail;
		if (p->written != p->size && ftruncate(fd, (off_t)p->size) < 0) {
			r = -errno;
			goto fail;
		}
	}
	if (fsetxattr(fd, BD_ETAG_XATTR, p->etag, strlen(p->etag), 0) < 0 && errno != ENOTSUP &&
	    errno != EOPNOTSUPP) {
		r = -errno;
		goto fail;
	}
	/* The data and what is needed to read it (size, blocks). The ETag xattr may be lost
	 * in a crash without harm: bd_store_get() then computes the MD5, a valid ETag. */
	if (fdatasync(fd) < 0 || fstat(fd, &mine) < 0) {
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
	int64_t old_size = existed ? st.st_size : 0;
	/* Keep the version being replaced linked aside, for the deleter thread. */
	if (existed && st.st_nlink == 1 && aside_link(s, p->dir, path, aside) == 0)
		have_aside = true;
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
		if (!existed)
			s->dirs[p->dir].n_objects++;
		s->dirs[p->dir].n_bytes += (int64_t)p->size - old_size;
	}
	pthread_mutex_unlock(lock);
	if (r < 0) {
		/* The old version is still the object: only its aside name goes. */
		if (have_aside)
			(void)unlink(aside);
		goto fail;
	}
	/* Durable: an fsync of the directory that started after the rename, shared with the
	 * other puts into the same directory (group commit), without the key's lock. */
	r = dsync_parent(s, path);
	/* The old version is now only in DIR/tmp, for good: it may go. (Unlinked before the
	 * rename is durable, a crash could leave the directory naming a freed inode. After a
	 * failed fsync the aside name stays, for bd_store_open() to remove.) */
	if (r == 0 && have_aside)
		del_later(s, aside);
	if (r == 0 && s->n_dirs > 1) {
		/* Only now that the new copy is durable may an older one elsewhere go. */
		pthread_mutex_lock(lock);
		remove_other_copies(p, bucket, key, path, &mine, &existed);
		pthread_mutex_unlock(lock);
	}
	if (r == 0 && !existed)
		s->objects++;
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
	if (p->stage) {
		stage_put(p->store, p->stage);
		p->stage = NULL;
	}
}

/* ---------------------------------------------------------------- get / delete / buckets */

/* 32 lowercase hex digits (an MD5), optionally followed by "-<decimal>". */
static bool etag_valid(const char *e)
{
	size_t i;

	for (i = 0; i < 32; i++)
		if (!((e[i] >= '0' && e[i] <= '9') || (e[i] >= 'a' && e[i] <= 'f')))
			return false;
	if (e[32] == '\0')
		return true;
	if (e[32] != '-' || !e[33])
		return false;
	for (i = 33; e[i]; i++)
		if (e[i] < '0' || e[i] > '9')
			return false;
	return true;
}

int bd_store_bucket_exists(struct bd_store *s, const char *bucket)
{
	char path[PATH_MAX];
	struct stat st;

	for (unsigned i = 0; i < s->n_dirs; i++)
		if (bd_path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL) == 0 &&
		    stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
	return -PROTO_ENOBUCKET;
}

int bd_store_bucket_create(struct bd_store *s, const char *bucket)
{
	char path[PATH_MAX];
	int r;

	for (unsigned i = 0; i < s->n_dirs; i++) {
		if ((r = bd_path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL)) < 0)
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
		return bd_store_bucket_exists(s, bucket) < 0 ? -PROTO_ENOBUCKET : -ENOENT;
	}
	ssize_t n = fgetxattr(best.fd, BD_ETAG_XATTR, best.etag, sizeof(best.etag) - 1);
	best.etag[n > 0 ? n : 0] = '\0';
	if (!etag_valid(best.etag) && (r = md5_fd(best.fd, best.size, best.etag)) < 0) {
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
		    (r = bd_path_join(stop, sizeof(stop), s->dirs[i].objects, bucket, NULL)) < 0)
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
		if ((r = dsync_parent(s, path)) < 0)
			break;
		prune_empty_parents(stop, path);
	}
	if (removed)
		s->objects--;
	pthread_mutex_unlock(lock);
	return r;
}
