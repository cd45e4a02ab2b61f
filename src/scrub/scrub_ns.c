/*
 * scrub/ns: the namespace phase. Reads every inode into the scrub's inode table, lists every
 * directory, and checks, in this order:
 *   1. each directory entry: names an existing inode, not the root, with the inode's type;
 *      a directory named by a second entry (directories have one parent);
 *   2. each inode without entries: an orphan (nlink 0: unlinked while open when the daemon
 *      stopped) is removed with its stripes (queued as garbage), xattrs and inline data; a
 *      lost inode (nlink > 0, or a directory that still has entries) is linked into
 *      /lost+found as "#<ino>", as e2fsck does;
 *   3. link counts: a directory has 2 + its subdirectories, anything else its entries;
 *   4. regular files: no stripe map at or past the end of the file, the last stripe's data
 *      length within the file size, inline data (stripe 0 kept in the metadata) no longer than
 *      the file and not beside a stripe 0 map; other inodes: no stripe maps; directories: no
 *      inline data;
 *   5. every directory reaches the root through its parents: a cycle of directories that
 *      only name each other (cut off from the root) is broken by moving the directory where
 *      the walk closed the loop to /lost+found;
 *   6. the whole tables: directory entries inside a directory inode that does not exist (or
 *      is not a directory) are removed (step 1 never counted them: what they named is an
 *      orphan or lost inode in step 2 of the same run); stripe maps of an inode that does not
 *      exist are released (their fragments queued as garbage).
 * Fixes (unless dry_run) are small metadata batches committed as they are found (WAL synced at
 * the end of the run). The table it builds (parent of every inode) gives damaged files their
 * paths in the later phases. Single-threaded: runs before the stripe workers start.
 * Mounted mode: the whole phase runs under opt.meta_lock (the daemon's inode lock), so that it
 * sees the namespace between two operations, never in the middle of one; an unlinked inode
 * that opt.in_use reports (open, or looked up by the kernel) is legitimate and left alone.
 *
 * Step 6 runs right after step 1 for the entries (so that step 2 sees their inodes as
 * unlinked) and last for the stripe maps (after the removals of step 2).
 * Not checked: xattrs and inline values of an inode that does not exist (unreachable, a few
 * bytes of metadata; they do not affect any file).
 */
#include "scrub_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tessera/common.h"

struct ns {
	struct scrub *s;
	bool fix;
	struct meta_batch *b;
	uint64_t dir;
	uint64_t lost_found;
	uint64_t done;
};

static int ns_commit(struct ns *ns)
{
	int r = meta_commit(ns->s->meta, ns->b, false);

	if (r < 0)
		scrub_warn(ns->s, "cannot commit a namespace fix: %s", strerror(-r));
	return r;
}

static int load_inode(void *ctx, const struct meta_inode *in)
{
	struct ns *ns = ctx;
	struct scrub *s = ns->s;
	struct scrub_inode *e = scrub_inode_add(s, in->ino);

	if (!e)
		return -ENOMEM;
	e->mode = in->mode;
	e->nlink = in->nlink;
	e->size = in->size;
	e->flags = in->flags;
	s->st.inodes++;
	if (S_ISDIR(in->mode))
		s->st.dirs++;
	else if (S_ISREG(in->mode))
		s->st.files++;
	if (++ns->done % 4096 == 0)
		scrub_progress(s, "namespace", ns->done, 0, 0, false);
	return 0;
}

static int check_entry(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	struct ns *ns = ctx;
	struct scrub *s = ns->s;
	struct scrub_inode *e = scrub_inode_find(s, ino);
	struct scrub_inode *dir = scrub_inode_find(s, ns->dir);

	if (!e || e->removed || ino == META_ROOT_INO || ino == ns->dir) {
		if (ns->fix)
			meta_batch_dentry_del(ns->b, ns->dir, name, name_len);
		scrub_ns_event(s, ns->dir, ns->fix, "entry '%s' names %s inode %llu%s", name,
			       !e || e->removed ? "missing" : "the root or its own",
			       (unsigned long long)ino, ns->fix ? ": removed" : "");
		return 0;
	}
	if ((mode & S_IFMT) != (e->mode & S_IFMT)) {
		if (ns->fix)
			meta_batch_dentry_put(ns->b, ns->dir, name, name_len, ino, e->mode & S_IFMT);
		scrub_ns_event(s, ns->dir, ns->fix, "entry '%s' has type %o, inode %llu is %o%s",
			       name, mode & S_IFMT, (unsigned long long)ino, e->mode & S_IFMT,
			       ns->fix ? ": corrected" : "");
	}
	if (S_ISDIR(e->mode) && e->refs > 0) {
		if (ns->fix)
			meta_batch_dentry_del(ns->b, ns->dir, name, name_len);
		scrub_ns_event(s, ns->dir, ns->fix, "entry '%s' is a second link to directory %llu%s",
			       name, (unsigned long long)ino, ns->fix ? ": removed" : "");
		return 0;
	}
	e->refs++;
	if (!e->parent)
		e->parent = ns->dir;
	if (S_ISDIR(e->mode) && dir)
		dir->subdirs++;
	return 0;
}

static int remove_inode(struct ns *ns, struct scrub_inode *e)
{
	int r = stripe_purge_inode(ns->s->meta, e->ino, ns->b);

	if (r == 0)
		r = ns_commit(ns);
	if (r == 0)
		e->removed = true;
	return r;
}

/* Finds or creates /lost+found. */
static int lost_found(struct ns *ns, uint64_t *ret)
{
	struct scrub *s = ns->s;
	struct meta_inode in, root;
	uint32_t mode;
	uint64_t ino;
	int r;

	if (ns->lost_found) {
		*ret = ns->lost_found;
		return 0;
	}
	r = meta_dentry_get(s->meta, META_ROOT_INO, "lost+found", 10, &ino, &mode);
	if (r == 0) {
		struct scrub_inode *e = scrub_inode_find(s, ino);
		if (!S_ISDIR(mode) || !e || e->removed)
			return -EEXIST;
		ns->lost_found = ino;
		*ret = ino;
		return 0;
	}
	if (r != -ENOENT)
		return r;
	r = meta_inode_get(s->meta, META_ROOT_INO, &root);
	if (r < 0)
		return r;
	r = meta_alloc_ino(s->meta, &ino);
	if (r < 0)
		return r;
	uint64_t now = tclock_realtime_ns();
	in = (struct meta_inode){ .ino = ino, .mode = S_IFDIR | 0700, .nlink = 2,
				  .atime_ns = now, .mtime_ns = now, .ctime_ns = now,
				  .btime_ns = now, .generation = 1 };
	root.nlink++;
	root.mtime_ns = root.ctime_ns = now;
	meta_batch_inode_put(ns->b, &in);
	meta_batch_inode_put(ns->b, &root);
	meta_batch_dentry_put(ns->b, META_ROOT_INO, "lost+found", 10, ino, S_IFDIR);
	r = ns_commit(ns);
	if (r < 0)
		return r;
	struct scrub_inode *e = scrub_inode_add(s, ino);
	struct scrub_inode *re = scrub_inode_find(s, META_ROOT_INO);
	if (!e || !re)
		return -ENOMEM;
	e->mode = in.mode;
	e->nlink = 2;
	e->refs = 1;
	e->parent = META_ROOT_INO;
	re->subdirs++;
	re->nlink++;
	ns->lost_found = ino;
	*ret = ino;
	return 0;
}

static int fix_unlinked(struct ns *ns, struct scrub_inode *e)
{
	struct scrub *s = ns->s;
	uint64_t lf = 0;
	char name[32];
	int r;

	if (s->opt.in_use && s->opt.in_use(s->opt.in_use_ctx, e->ino))
		return 0; /* unlinked while open: the daemon removes it when it is closed */
	bool dir_with_entries = S_ISDIR(e->mode) && meta_dir_has_entries(s->meta, e->ino) != 0;
	if ((e->nlink == 0 || (e->flags & META_INODE_F_ORPHAN)) && !dir_with_entries) {
		if (ns->fix) {
			r = remove_inode(ns, e);
			if (r < 0)
				return r;
		}
		scrub_ns_event(s, e->ino, ns->fix, "orphan inode %llu (no entry, nlink %u)%s",
			       (unsigned long long)e->ino, e->nlink, ns->fix ? ": removed" : "");
		return 0;
	}
	if (!ns->fix) {
		scrub_ns_event(s, e->ino, false, "lost inode %llu (no entry, nlink %u)",
			       (unsigned long long)e->ino, e->nlink);
		return 0;
	}
	r = lost_found(ns, &lf);
	if (r < 0) {
		scrub_ns_event(s, e->ino, false, "lost inode %llu: cannot use /lost+found: %s",
			       (unsigned long long)e->ino, strerror(-r));
		return r == -EEXIST ? 0 : r;
	}
	int len = snprintf(name, sizeof(name), "#%llu", (unsigned long long)e->ino);
	meta_batch_dentry_put(ns->b, lf, name, (size_t)len, e->ino, e->mode & S_IFMT);
	if (S_ISDIR(e->mode)) {
		/* a directory keeps its parent in rdev (meta.h): ".." is /lost+found now */
		struct meta_inode in;
		r = meta_inode_get(s->meta, e->ino, &in);
		if (r < 0)
			return r;
		in.rdev = lf;
		meta_batch_inode_put(ns->b, &in);
	}
	r = ns_commit(ns);
	if (r < 0)
		return r;
	e->refs = 1;
	e->parent = lf;
	if (S_ISDIR(e->mode)) {
		struct scrub_inode *l = scrub_inode_find(s, lf);
		if (l)
			l->subdirs++;
	}
	scrub_ns_event(s, e->ino, true, "lost inode %llu linked as /lost+found/%s",
		       (unsigned long long)e->ino, name);
	return 0;
}

static int fix_nlink(struct ns *ns, struct scrub_inode *e)
{
	struct scrub *s = ns->s;
	uint32_t want = S_ISDIR(e->mode) ? 2 + e->subdirs : e->refs;
	struct meta_inode in;
	int r;

	if (e->nlink == want || (e->refs == 0 && e->ino != META_ROOT_INO))
		return 0; /* an unlinked inode was reported (and fixed) as orphan or lost */
	if (ns->fix) {
		r = meta_inode_get(s->meta, e->ino, &in);
		if (r < 0)
			return r;
		in.nlink = want;
		in.flags &= ~META_INODE_F_ORPHAN;
		meta_batch_inode_put(ns->b, &in);
		meta_batch_orphan_del(ns->b, e->ino);
		r = ns_commit(ns);
		if (r < 0)
			return r;
	}
	scrub_ns_event(s, e->ino, ns->fix, "inode %llu has nlink %u, %u entries count%s",
		       (unsigned long long)e->ino, e->nlink, want, ns->fix ? ": corrected" : "");
	e->nlink = want;
	return 0;
}

static int count_stripe(void *ctx, uint64_t stripe, const struct meta_stripe *rec)
{
	(void)stripe;
	(void)rec;
	(*(uint64_t *)ctx)++;
	return 0;
}

static int fix_inline(struct ns *ns, struct scrub_inode *e, bool has_stripe0)
{
	struct scrub *s = ns->s;
	size_t len;
	int r = meta_inline_get(s->meta, e->ino, NULL, 0, &len);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (S_ISDIR(e->mode)) {
		if (ns->fix) {
			meta_batch_inline_del(ns->b, e->ino);
			r = ns_commit(ns);
			if (r < 0)
				return r;
		}
		scrub_ns_event(s, e->ino, ns->fix, "directory %llu has inline data%s",
			       (unsigned long long)e->ino, ns->fix ? ": removed" : "");
		return 0;
	}
	if (!S_ISREG(e->mode))
		return 0; /* a symlink's target */
	if (has_stripe0) {
		/* Each store of stripe 0 replaces the other form in one batch. */
		scrub_ns_event(s, e->ino, false, "file %llu has both inline data and a stripe 0 map",
			       (unsigned long long)e->ino);
		return 0;
	}
	/* Inline data is stripe 0 up to its length; the rest of the file reads as zeros (a file
	 * grown by truncate, or written further out in later stripes). Only longer is wrong. */
	if (len <= e->size)
		return 0;
	bool fixable = e->size <= META_INLINE_MAX;
	if (ns->fix && fixable) {
		uint8_t *buf = calloc(1, TESSERA_MAX(len, (size_t)e->size) + 1);
		size_t got;
		if (!buf)
			return -ENOMEM;
		r = meta_inline_get(s->meta, e->ino, buf, len + 1, &got);
		if (r == 0) {
			/* the file size is the truth: cut or zero-fill */
			meta_batch_inline_put(ns->b, e->ino, buf, (size_t)e->size);
			r = ns_commit(ns);
		}
		free(buf);
		if (r < 0)
			return r;
	}
	scrub_ns_event(s, e->ino, ns->fix && fixable, "file %llu: %zu bytes inline, size %llu%s",
		       (unsigned long long)e->ino, len, (unsigned long long)e->size,
		       ns->fix && fixable ? ": inline data cut or zero-filled to the size" : "");
	return 0;
}

static int fix_stripes(struct ns *ns, struct scrub_inode *e)
{
	struct scrub *s = ns->s;
	const uint64_t S = s->sb->stripe_size;
	uint64_t from = S_ISREG(e->mode) ? (e->size + S - 1) / S : 0, past = 0;
	struct meta_stripe rec;
	int r;

	r = meta_stripe_list(s->meta, e->ino, from, count_stripe, &past);
	if (r < 0)
		return r;
	if (past) {
		if (ns->fix) {
			r = stripe_release(s->meta, e->ino, from, 0, ns->b);
			if (r >= 0)
				r = ns_commit(ns);
			if (r < 0)
				return r;
		}
		scrub_ns_event(s, e->ino, ns->fix, "inode %llu (size %llu) has %llu stripe map(s) "
			       "past its end%s", (unsigned long long)e->ino,
			       (unsigned long long)e->size, (unsigned long long)past,
			       ns->fix ? ": released" : "");
	}
	if (!S_ISREG(e->mode))
		return fix_inline(ns, e, false);
	if (e->size % S) {
		uint64_t idx = e->size / S;
		r = meta_stripe_get(s->meta, e->ino, idx, &rec);
		if (r < 0 && r != -ENOENT)
			return r;
		if (r == 0 && rec.data_len > e->size % S) {
			uint32_t was = rec.data_len;
			if (ns->fix) {
				rec.data_len = (uint32_t)(e->size % S);
				meta_batch_stripe_put(ns->b, e->ino, idx, &rec);
				r = ns_commit(ns);
				if (r < 0)
					return r;
			}
			scrub_ns_event(s, e->ino, ns->fix, "inode %llu: last stripe holds %u bytes, "
				       "the size leaves %llu%s", (unsigned long long)e->ino, was,
				       (unsigned long long)(e->size % S), ns->fix ? ": cut" : "");
		}
	}
	r = meta_stripe_get(s->meta, e->ino, 0, &rec);
	if (r < 0 && r != -ENOENT)
		return r;
	return fix_inline(ns, e, r == 0);
}

/* Step 6, entries: parent is not a directory of the table. */
static int check_entry_parent(void *ctx, uint64_t parent, const char *name, size_t name_len,
			      uint64_t ino, uint32_t mode)
{
	struct ns *ns = ctx;
	struct scrub_inode *d = scrub_inode_find(ns->s, parent);

	(void)mode;
	if (d && !d->removed && S_ISDIR(d->mode))
		return 0;
	if (ns->fix)
		meta_batch_dentry_del(ns->b, parent, name, name_len);
	scrub_ns_event(ns->s, 0, ns->fix, "entry '%s' (inode %llu) is in %s %llu%s", name,
		       (unsigned long long)ino, d && !d->removed ? "non-directory" : "missing directory",
		       (unsigned long long)parent, ns->fix ? ": removed" : "");
	return 0;
}

struct stray_stripes {
	struct ns *ns;
	uint64_t last;   /* inode of the last stray run reported */
	uint64_t n;      /* its stripe maps */
	uint64_t *inos;  /* inodes with stray maps, to release after the scan */
	size_t len, cap;
};

/* Step 6, stripe maps: the inode does not exist. Collects the inodes (the release reads the
 * same table, so it runs after the scan). */
static int check_stripe_owner(void *ctx, uint64_t ino, uint64_t stripe,
			      const struct meta_stripe *rec)
{
	struct stray_stripes *st = ctx;
	struct scrub_inode *e = scrub_inode_find(st->ns->s, ino);

	(void)stripe;
	(void)rec;
	if (e && !e->removed)
		return 0;
	if (st->len && st->inos[st->len - 1] == ino)
		return 0;
	if (st->len == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 64;
		uint64_t *p = realloc(st->inos, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		st->inos = p;
		st->cap = cap;
	}
	st->inos[st->len++] = ino;
	return 0;
}

static int release_stray_stripes(struct ns *ns)
{
	struct stray_stripes st = { .ns = ns };
	int r = meta_stripe_list_all(ns->s->meta, check_stripe_owner, &st);

	for (size_t i = 0; r >= 0 && i < st.len; i++) {
		struct scrub_inode *e = scrub_inode_find(ns->s, st.inos[i]);
		int n = 0;

		if (e && e->removed)
			continue; /* removed in this run: its stripes went with it */
		if (ns->fix) {
			n = stripe_release(ns->s->meta, st.inos[i], 0, 0, ns->b);
			r = n < 0 ? n : ns_commit(ns);
		}
		scrub_ns_event(ns->s, 0, ns->fix, "stripe maps of missing inode %llu%s",
			       (unsigned long long)st.inos[i],
			       ns->fix ? ": released, fragments queued for deletion" : "");
	}
	free(st.inos);
	return r < 0 ? r : 0;
}

enum { SCRUB_REACH_UNKNOWN, SCRUB_REACH_WALKING, SCRUB_REACH_ROOT };

/* Moves directory e out of its parent's entries into /lost+found (breaking a cycle): the
 * entry's removal, the new entry and the new '..' in one batch. */
static int detach_to_lost_found(struct ns *ns, struct scrub_inode *e)
{
	struct scrub *s = ns->s;
	char name[META_NAME_MAX + 1], lname[32];
	struct scrub_inode *p = scrub_inode_find(s, e->parent), *l;
	const uint64_t parent = e->parent;
	struct meta_inode in;
	uint64_t lf = 0;
	int r;

	r = scrub_entry_name(s, e->parent, e->ino, name);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if (!ns->fix || (s->opt.in_use && s->opt.in_use(s->opt.in_use_ctx, e->ino))) {
		scrub_ns_event(s, e->ino, false,
			       "directory %llu is in a cycle cut off from the root (entry '%s' "
			       "in %llu)%s",
			       (unsigned long long)e->ino, name, (unsigned long long)e->parent,
			       ns->fix ? ": in use, left for a later run" : "");
		return 0;
	}
	r = lost_found(ns, &lf);
	if (r < 0) {
		scrub_ns_event(s, e->ino, false,
			       "directory %llu is in a cycle cut off from the root: cannot use "
			       "/lost+found: %s",
			       (unsigned long long)e->ino, strerror(-r));
		return r == -EEXIST ? 0 : r;
	}
	r = meta_inode_get(s->meta, e->ino, &in);
	if (r < 0)
		return r;
	int len = snprintf(lname, sizeof(lname), "#%llu", (unsigned long long)e->ino);
	in.rdev = lf; /* '..' (meta.h) */
	meta_batch_dentry_del(ns->b, parent, name, strlen(name));
	meta_batch_dentry_put(ns->b, lf, lname, (size_t)len, e->ino, S_IFDIR);
	meta_batch_inode_put(ns->b, &in);
	r = ns_commit(ns);
	if (r < 0)
		return r;
	if (p && p->subdirs)
		p->subdirs--;
	l = scrub_inode_find(s, lf);
	if (l)
		l->subdirs++;
	e->refs = 1;
	e->parent = lf;
	scrub_ns_event(s, e->ino, true,
		       "directory %llu was in a cycle cut off from the root: moved from '%s' in "
		       "%llu to /lost+found/%s",
		       (unsigned long long)e->ino, name, (unsigned long long)parent, lname);
	return 0;
}

/* Step 5: walks from each directory up its parents. A walk that reaches the root (or a
 * directory known to reach it) marks its path; one that meets its own path is a cycle. */
static int check_reachable(struct ns *ns, const uint64_t *inos, size_t ni)
{
	struct scrub *s = ns->s;
	struct scrub_inode *root = scrub_inode_find(s, META_ROOT_INO);
	uint64_t *path = malloc((ni + 1) * sizeof(*path));
	int r = 0;

	if (!path)
		return -ENOMEM;
	root->reach = SCRUB_REACH_ROOT;
	if (ns->lost_found) {
		struct scrub_inode *lf = scrub_inode_find(s, ns->lost_found);
		if (lf)
			lf->reach = SCRUB_REACH_ROOT;
	}
	for (size_t i = 0; i < ni && r == 0; i++) {
		struct scrub_inode *e = scrub_inode_find(s, inos[i]);
		size_t depth = 0;

		if (!e || e->removed || !S_ISDIR(e->mode) || e->reach != SCRUB_REACH_UNKNOWN)
			continue;
		while (e && e->reach == SCRUB_REACH_UNKNOWN && e->parent && depth < ni) {
			e->reach = SCRUB_REACH_WALKING;
			path[depth++] = e->ino;
			e = scrub_inode_find(s, e->parent);
		}
		if (e && e->reach == SCRUB_REACH_WALKING) {
			/* the loop closed at e: cut it there */
			r = detach_to_lost_found(ns, e);
		}
		/* Everything on the path reaches the root now (or, in a dry run, was reported
		 * once as part of its cycle). */
		for (size_t j = 0; j < depth; j++) {
			struct scrub_inode *d = scrub_inode_find(s, path[j]);
			if (d)
				d->reach = SCRUB_REACH_ROOT;
		}
	}
	free(path);
	return r;
}

static int namespace_locked(struct scrub *s, struct ns *nsp);

int scrub_namespace(struct scrub *s)
{
	struct ns ns = { .s = s, .fix = !s->opt.dry_run && !s->opt.skip_namespace };
	int r;

	ns.b = meta_batch_new(s->meta);
	if (!ns.b)
		return -ENOMEM;
	scrub_meta_lock(s);
	r = namespace_locked(s, &ns);
	scrub_meta_unlock(s);
	scrub_progress(s, "namespace", ns.done, ns.done, 0, true);
	meta_batch_free(ns.b);
	return r;
}

static int namespace_locked(struct scrub *s, struct ns *nsp)
{
	struct ns ns = *nsp;
	bool report = !s->opt.skip_namespace;
	int r;

	r = meta_inode_list(s->meta, load_inode, &ns);
	if (r < 0)
		goto out;
	if (!scrub_inode_find(s, META_ROOT_INO)) {
		scrub_ns_event(s, META_ROOT_INO, false, "the root directory is missing");
		r = -EIO;
		goto out;
	}
	/* 1. entries (collect the directories first: the table may grow while fixing) */
	size_t cap = s->inodes_cap, nd = 0;
	uint64_t *dirs = malloc(s->inodes_len * sizeof(*dirs) + 1);
	if (!dirs) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < cap; i++)
		if (s->inodes[i].ino && S_ISDIR(s->inodes[i].mode))
			dirs[nd++] = s->inodes[i].ino;
	for (size_t i = 0; i < nd && r == 0; i++) {
		ns.dir = dirs[i];
		r = meta_dentry_list(s->meta, dirs[i], NULL, 0, check_entry, &ns);
		if (r == 0 && ns.fix)
			r = ns_commit(&ns);
		if (++ns.done % 1024 == 0)
			scrub_progress(s, "namespace", ns.done, 0, 0, false);
	}
	free(dirs);
	s->table_ready = true;
	if (r < 0 || !report)
		goto out;
	/* 6 (entries): entries of directories that do not exist */
	r = meta_dentry_list_all(s->meta, check_entry_parent, &ns);
	if (r == 0 && ns.fix)
		r = ns_commit(&ns);
	if (r < 0)
		goto out;
	/* 2, 3, 4: per inode. Snapshot the inode numbers: lost+found may be added. */
	uint64_t *inos = malloc(s->inodes_len * sizeof(*inos) + 1);
	size_t ni = 0;
	if (!inos) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < s->inodes_cap; i++)
		if (s->inodes[i].ino)
			inos[ni++] = s->inodes[i].ino;
	for (size_t i = 0; i < ni && r == 0; i++) {
		struct scrub_inode *e = scrub_inode_find(s, inos[i]);
		if (e && e->ino != META_ROOT_INO && e->refs == 0 && !e->removed)
			r = fix_unlinked(&ns, e);
	}
	if (r == 0)
		r = check_reachable(&ns, inos, ni);
	/* a /lost+found made just now gets its link count checked too (directories moved in) */
	if (ns.lost_found) {
		bool listed = false;
		for (size_t i = 0; i < ni && !listed; i++)
			listed = inos[i] == ns.lost_found;
		if (!listed) {
			uint64_t *p = realloc(inos, (ni + 1) * sizeof(*inos));
			if (!p) {
				free(inos);
				r = -ENOMEM;
				goto out;
			}
			inos = p;
			inos[ni++] = ns.lost_found;
		}
	}
	for (size_t i = 0; i < ni && r == 0; i++) {
		struct scrub_inode *e = scrub_inode_find(s, inos[i]);
		if (e && !e->removed)
			r = fix_nlink(&ns, e);
	}
	for (size_t i = 0; i < ni && r == 0; i++) {
		struct scrub_inode *e = scrub_inode_find(s, inos[i]);
		if (e && !e->removed)
			r = fix_stripes(&ns, e);
	}
	free(inos);
	/* 6 (stripe maps): maps of inodes that do not exist */
	if (r == 0)
		r = release_stray_stripes(&ns);
out:
	nsp->done = ns.done;
	return r;
}
