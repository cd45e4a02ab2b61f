/*
 * journal_restore: the metadata rebuilt from the servers alone (journal.h).
 *
 * The newest checkpoint whose manifest and every part have an intact copy somewhere is applied
 * into a new database built under a temporary name beside the target, then the journal records
 * after it (jreplay: the latest epoch wins from its first record on, and the replay stops at
 * the first record no server holds intact), the position is synced, and the directory is
 * renamed into place: the target is either absent or whole.
 */
#include "journal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/meta.h"

int journal_list_filesystems(struct blockstore *bs, const uint16_t *ids, size_t n,
			     uint8_t (*uuids)[16], size_t max)
{
	struct blockclient_object *objs = malloc(BLOCKCLIENT_LIST_MAX_KEYS * sizeof(*objs));
	char token[BLOCKCLIENT_LIST_KEY_MAX + 1], next[BLOCKCLIENT_LIST_KEY_MAX + 1];
	size_t found = 0, answered = 0, plen = strlen(JMARKER_PREFIX);

	if (!objs)
		return -ENOMEM;
	for (size_t s = 0; s < n; s++) {
		token[0] = 0;
		for (;;) {
			size_t got = 0;
			int r = blockstore_list(bs, ids[s], JMARKER_PREFIX, token, objs,
						BLOCKCLIENT_LIST_MAX_KEYS, &got, next, sizeof(next));
			if (r < 0) {
				if (r == -ENOENT)
					answered++;
				break;
			}
			for (size_t i = 0; i < got; i++) {
				uint8_t u[16];
				if (strncmp(objs[i].key, JMARKER_PREFIX, plen) != 0 ||
				    tuuid_parse(objs[i].key + plen, u) < 0)
					continue;
				bool dup = false;
				for (size_t k = 0; k < found && k < max; k++)
					dup |= memcmp(uuids[k], u, 16) == 0;
				if (dup)
					continue;
				if (found < max)
					memcpy(uuids[found], u, 16);
				found++;
			}
			if (!next[0]) {
				answered++;
				break;
			}
			snprintf(token, sizeof(token), "%s", next);
		}
	}
	free(objs);
	return answered ? (int)found : -EIO;
}

/* ---- the checkpoint ---- */

static int manifest_check(void *ctx, const uint8_t *obj, size_t len)
{
	const struct jentry *e = ctx;
	struct jobj_hdr h;

	if (jobj_check(obj, len, JOBJ_MANIFEST, &h) < 0 || h.seq != e->seq || h.epoch != e->epoch ||
	    h.last > 999999 || len != JHDR_LEN + h.last * 4 + 4 ||
	    be_get32(obj + len - 4) != tcrc32c(0, obj, len - 4))
		return -EBADMSG;
	return 0;
}

struct part_check {
	uint32_t crc;
};

static int part_check(void *ctx, const uint8_t *obj, size_t len)
{
	struct part_check *p = ctx;

	return tcrc32c(0, obj, len) == p->crc ? 0 : -EBADMSG;
}

static int apply_ckpt_rec(void *ctx, uint64_t seq, const void *ops, size_t len)
{
	(void)seq;
	return meta_journal_apply(ctx, ops, len, 0, 0);
}

static const struct jentry *find_part(const struct jcat *c, uint64_t seq, uint64_t epoch,
				      uint64_t part)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->e[i].kind == JOBJ_PART && c->e[i].seq == seq && c->e[i].epoch == epoch &&
		    c->e[i].last == part)
			return &c->e[i];
	return NULL;
}

/* Applies checkpoint man (its manifest's entry) into meta. 0, -EIO (a part has no intact copy:
 * nothing usable, try an older one), -ENOMEM, -errno of the store. */
static int apply_checkpoint(struct meta *meta, struct blockstore *bs, const uint16_t *ids,
			    const struct jcat *c, const uint8_t uuid[16], const struct jentry *man,
			    char *err, size_t err_size)
{
	char key[JKEY_MAX];
	uint8_t *mobj, *pobj;
	size_t mlen, plen;
	struct jobj_hdr h;
	int r;

	jkey_ckpt(key, uuid, man->seq, man->epoch, -1);
	r = jobj_fetch(bs, ids, man, key, manifest_check, (void *)man, &mobj, &mlen);
	if (r < 0) {
		snprintf(err, err_size, "checkpoint %llu: no intact manifest",
			 (unsigned long long)man->seq);
		return r;
	}
	jobj_check(mobj, mlen, JOBJ_MANIFEST, &h);
	/* every part must be there before anything is applied */
	for (uint64_t p = 0; p < h.last; p++) {
		if (!find_part(c, man->seq, man->epoch, p)) {
			snprintf(err, err_size, "checkpoint %llu: part %llu is on no server",
				 (unsigned long long)man->seq, (unsigned long long)p);
			free(mobj);
			return -EIO;
		}
	}
	for (uint64_t p = 0; p < h.last; p++) {
		const struct jentry *pe = find_part(c, man->seq, man->epoch, p);
		struct part_check pc = { be_get32(mobj + JHDR_LEN + p * 4) };
		struct jobj_hdr ph;
		jkey_ckpt(key, uuid, man->seq, man->epoch, (long)p);
		r = jobj_fetch(bs, ids, pe, key, part_check, &pc, &pobj, &plen);
		if (r < 0) {
			snprintf(err, err_size, "checkpoint %llu: no intact copy of part %llu",
				 (unsigned long long)man->seq, (unsigned long long)p);
			free(mobj);
			return r == -ENOMEM ? r : -EIO;
		}
		r = jobj_check(pobj, plen, JOBJ_PART, &ph);
		if (r == 0)
			r = jobj_records(pobj, plen, &ph, apply_ckpt_rec, meta);
		free(pobj);
		if (r < 0) {
			snprintf(err, err_size, "checkpoint %llu: part %llu does not apply: %s",
				 (unsigned long long)man->seq, (unsigned long long)p, strerror(-r));
			free(mobj);
			return r;
		}
	}
	free(mobj);
	return meta_journal_set_pos(meta, man->epoch, man->seq);
}

/* The untried checkpoint of the latest epoch, the newest of it: the chain a restore follows is
 * the latest epoch's. NULL when every one was tried. */
static const struct jentry *next_manifest(const struct jcat *c)
{
	const struct jentry *best = NULL;

	for (size_t i = 0; i < c->n; i++) {
		const struct jentry *e = &c->e[i];
		if (e->kind != JOBJ_MANIFEST || (e->flags & JE_BAD))
			continue;
		if (!best || e->epoch > best->epoch || (e->epoch == best->epoch && e->seq > best->seq))
			best = e;
	}
	return best;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int journal_restore(struct blockstore *bs, const uint16_t *ids, size_t n, const uint8_t uuid[16],
		    const char *dir, struct journal_restore_info *ret, char *err, size_t err_size)
{
	struct jcat c;
	char tmp[4096];
	struct meta *meta = NULL;
	int r;

	memset(ret, 0, sizeof(*ret));
	err[0] = 0;
	if (access(dir, F_OK) == 0) {
		snprintf(err, err_size, "'%s' exists", dir);
		return -EEXIST;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.restoring", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS); /* a previous try's leftovers */
	r = jcat_list(&c, bs, ids, n, uuid);
	if (r < 0) {
		snprintf(err, err_size, "no server answered the listing");
		return r;
	}
	/* the newest checkpoint first; one whose parts are damaged gives way to an older one */
	r = -ENOENT;
	snprintf(err, err_size, "the servers hold no checkpoint of this filesystem");
	for (;;) {
		const struct jentry *e = next_manifest(&c);
		if (!e)
			break;
		((struct jentry *)e)->flags |= JE_BAD; /* tried */
		if (meta) {
			meta_close(meta);
			meta = NULL;
			nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		}
		r = meta_create_empty(tmp, &meta);
		if (r < 0) {
			snprintf(err, err_size, "cannot create '%s': %s", tmp, strerror(-r));
			break;
		}
		r = apply_checkpoint(meta, bs, ids, &c, uuid, e, err, err_size);
		if (r == 0) {
			ret->ckpt_seq = e->seq;
			ret->ckpt_time_ns = (uint64_t)e->mtime_s * 1000000000ull;
			ret->epoch = e->epoch;
			ret->seq = e->seq;
			break;
		}
		if (r == -ENOMEM)
			break;
		tlog_warn("restore: %s: trying an older checkpoint", err);
	}
	if (r == 0) {
		struct jreplay_stats st = { 0 };
		err[0] = 0;
		r = jreplay(meta, bs, ids, &c, uuid, &ret->epoch, &ret->seq, UINT64_MAX, &st,
			    ret->stop, sizeof(ret->stop));
		if (r == -ESTALE)
			r = 0; /* consistent where it stopped; stop says why */
		ret->records = st.records;
		ret->segments = st.segments;
		if (r == 0)
			r = meta_journal_set_pos(meta, ret->epoch, ret->seq);
		if (r < 0)
			snprintf(err, err_size, "applying the journal failed: %s", strerror(-r));
	}
	jcat_free(&c);
	if (meta)
		meta_close(meta);
	if (r == 0 && rename(tmp, dir) < 0) {
		r = -errno;
		snprintf(err, err_size, "cannot rename '%s' to '%s': %s", tmp, dir, strerror(errno));
	}
	if (r < 0) {
		nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		return r;
	}
	/* the parent directory, so that the rename is durable */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", dir);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent)
		*slash = 0;
	else
		snprintf(parent, sizeof(parent), "%s", slash ? "/" : ".");
	return tfsync_dir(parent);
}
