/*
 * scrub/gc: garbage collection, the last phase (--gc).
 *
 *  1. The metadata garbage queue (old stripe versions, removed files) is drained: each entry's
 *     fragment is deleted on its server, then the entry is removed (404 counts as deleted).
 *  2. Every server is listed (ListObjectsV2, prefix "<fs uuid>/", so objects of another
 *     filesystem are never even looked at) and each object whose key parses as one of our
 *     fragment keys is checked against the stripe map: it is referenced when the map's current
 *     version of (inode, stripe) is the key's version, the fragment is present and the map
 *     names this server for it. An unreferenced object older than the grace period
 *     (LastModified) is deleted after a ranged GET of its header shows no other filesystem's
 *     uuid; younger ones are counted and kept (a write in flight, or a repair not yet
 *     committed, is younger than the grace period).
 * The map is read at deletion time, after the repair phase committed: a fragment moved by the
 * repair is referenced on its new server, and its stale copy on the old one is collected here.
 * Runs on the caller's thread; the deletes of one listing page go out in parallel. In mounted
 * mode the daemon's own garbage thread drains the queue too: both may delete the same object
 * (a 404 counts as done), and the queue commits are made under opt.meta_lock.
 */
#include "scrub_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/proto.h"

static int drain_queue(struct scrub *s)
{
	struct stripe_gc_pass pass;
	bool has_after = false;
	uint64_t after = 0, queued = 0;
	int r;

	for (;;) {
		if (scrub_cancelled(s))
			return -ECANCELED;
		r = stripe_gc_pass(s->meta, s->bs, &s->ss, s->opt.meta_lock, has_after, after,
				   s->opt.dry_run, &pass);
		if (r < 0 || pass.listed == 0)
			break;
		queued += pass.listed;
		has_after = true;
		after = pass.last_seq;
		if (s->opt.dry_run)
			continue;
		s->st.garbage_drained += pass.settled;
		if (pass.settled < pass.listed)
			scrub_warn(s, "%u garbage-queue entries could not be deleted (server down?); "
				   "kept for later", pass.listed - pass.settled);
	}
	if (s->opt.dry_run && queued)
		scrub_warn(s, "%llu fragments wait in the garbage queue", (unsigned long long)queued);
	return r;
}

/* Whether the stripe map references fragment (ino, stripe, version, index) on server. */
static int referenced(struct scrub *s, uint64_t ino, uint64_t stripe, uint64_t version,
		      unsigned index, uint16_t server)
{
	struct meta_stripe rec;
	int r = meta_stripe_get(s->meta, ino, stripe, &rec);

	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	return rec.version == version && index < (unsigned)rec.k + rec.m &&
	       (rec.present & (1ull << index)) && rec.servers[index] == server;
}

static int gc_server(struct scrub *s, uint16_t server, const char *url, int64_t now_s)
{
	struct blockclient_object *objs = calloc(BLOCKCLIENT_LIST_MAX_KEYS, sizeof(*objs));
	struct blockclient_op *ops = calloc(BLOCKCLIENT_LIST_MAX_KEYS, sizeof(*ops));
	uint8_t (*hdrs)[PROTO_FRAG_HDR_SIZE] = calloc(BLOCKCLIENT_LIST_MAX_KEYS, sizeof(*hdrs));
	size_t *cand = calloc(BLOCKCLIENT_LIST_MAX_KEYS, sizeof(*cand));
	char prefix[40], token[BLOCKCLIENT_LIST_KEY_MAX + 1] = "", uuid[37];
	int r = 0;

	if (!objs || !ops || !hdrs || !cand) {
		r = -ENOMEM;
		goto out;
	}
	tuuid_format(s->sb->fs_uuid, uuid);
	snprintf(prefix, sizeof(prefix), "%s/", uuid);
	do {
		size_t n = 0, nc = 0;
		char next[BLOCKCLIENT_LIST_KEY_MAX + 1];
		if (scrub_cancelled(s)) {
			r = -ECANCELED;
			goto out;
		}
		r = blockstore_list(s->bs, server, prefix, token, objs, BLOCKCLIENT_LIST_MAX_KEYS,
				     &n, next, sizeof(next));
		if (r < 0) {
			scrub_warn(s, "cannot list server %u (%s): %s; its unreferenced objects stay",
				   server, url, strerror(-r));
			r = 0;
			goto out;
		}
		snprintf(token, sizeof(token), "%s", next);
		s->st.gc_listed += n;
		for (size_t i = 0; i < n; i++) {
			uint8_t fu[16];
			uint64_t ino, stripe, version;
			unsigned index;
			if (proto_frag_key_parse(objs[i].key, fu, &ino, &stripe, &version, &index) < 0 ||
			    memcmp(fu, s->sb->fs_uuid, 16) != 0) {
				s->st.gc_foreign++;
				continue;
			}
			r = referenced(s, ino, stripe, version, index, server);
			if (r < 0)
				goto out;
			if (r)
				continue;
			if (objs[i].mtime_s > now_s - (int64_t)s->opt.gc_grace_s) {
				s->st.gc_young++;
				continue;
			}
			cand[nc] = i;
			ops[nc] = (struct blockclient_op){
				.method = BC_GET, .server = server, .key = objs[i].key,
				.buf = hdrs[nc], .buf_size = PROTO_FRAG_HDR_SIZE,
				.range_len = PROTO_FRAG_HDR_SIZE };
			nc++;
		}
		r = 0;
		if (nc == 0)
			continue;
		/* In doubt, the header decides: an object that says it belongs to another
		 * filesystem is never deleted. */
		blockstore_run(s->bs, ops, nc, true);
		size_t nd = 0;
		for (size_t j = 0; j < nc; j++) {
			struct proto_frag_hdr h;
			if (ops[j].result == 0 &&
			    proto_frag_hdr_decode(hdrs[j], ops[j].result_len, &h) == 0 &&
			    memcmp(h.fs_uuid, s->sb->fs_uuid, 16) != 0) {
				s->st.gc_foreign++;
				continue;
			}
			if (ops[j].result < 0 && ops[j].result != -ERANGE)
				continue; /* unreadable now: next run */
			cand[nd] = cand[j];
			ops[nd++] = (struct blockclient_op){ .method = BC_DELETE, .server = server,
							     .key = objs[cand[j]].key };
		}
		if (!s->opt.dry_run && nd)
			blockstore_run(s->bs, ops, nd, true);
		for (size_t j = 0; j < nd; j++) {
			bool done = !s->opt.dry_run && (ops[j].result == 0 || ops[j].result == -ENOENT);
			s->st.gc_orphans++;
			if (done)
				s->st.gc_deleted++;
			char msg[96];
			snprintf(msg, sizeof(msg), "unreferenced, %lld s old%s",
				 (long long)(now_s - objs[cand[j]].mtime_s),
				 done ? ": deleted" : s->opt.dry_run ? "" : ": delete failed");
			scrub_event(s, &(struct scrub_event){
				.kind = SCRUB_EV_GC_ORPHAN, .fixed = done, .index = -1,
				.server = server, .key = objs[cand[j]].key, .msg = msg });
		}
		scrub_progress(s, "gc", s->st.gc_listed, 0, 0, false);
	} while (token[0]);
out:
	free(cand);
	free(hdrs);
	free(ops);
	free(objs);
	return r;
}

int scrub_gc(struct scrub *s)
{
	int64_t now_s = (int64_t)time(NULL);
	int r = drain_queue(s);

	if (r < 0)
		return r;
	for (size_t i = 0; i < s->ss.n && r == 0; i++)
		r = gc_server(s, s->ss.servers[i].id, s->ss.srv[i]->url, now_s);
	scrub_progress(s, "gc", s->st.gc_listed, s->st.gc_listed, 0, true);
	return r;
}
