/*
 * blockd/store_list: ListObjectsV2 over the data directories (bd_store_list()).
 *
 * Keys are files below DIR/objects/{bucket}/, a key's '/' being directories. Each data
 * directory is walked depth first in an order that yields keys in byte order (a directory
 * sorts as "name/"), stopping after max_keys + 1 keys past start_after; the walks of all
 * data directories are merged and the first max_keys returned (one more tells whether the
 * list is truncated). Reads only: no lock (rename makes every switch atomic for readers).
 */
#include "blockd_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/common.h"

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
		struct name_ent *ne = tgrow(ents, &cap, n + 1, sizeof(*ents), 64);
		if (!ne) {
			r = -ENOMEM;
			goto out;
		}
		ents = ne;
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
		if ((r = bd_path_join(path, sizeof(path), s->dirs[i].objects, bucket, NULL)) < 0)
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
		r = -PROTO_ENOBUCKET;
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
