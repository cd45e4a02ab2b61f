/*
 * stripe/gc: releasing stripes in metadata batches, and draining the garbage queue.
 *
 * A stripe version leaves the map and its fragments enter the garbage queue in the same batch
 * (data.c D2); the queue is drained by deleting each fragment and then its entry. A 404 counts
 * as deleted; an entry for a retired server, or one the store does not know, is dropped (there
 * is nothing left to delete there). The daemon's garbage thread and the scrubber both drain
 * with stripe_gc_pass(); when both run, the same object may be deleted twice, which is fine.
 */
#include "tessera/stripe.h"

#include <errno.h>
#include <stdlib.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

void stripe_garbage_add(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			const struct meta_stripe *rec)
{
	for (unsigned i = 0; i < (unsigned)rec->k + rec->m; i++) {
		if (!(rec->present & (1ull << i)))
			continue;
		struct meta_garbage g = { .ino = ino, .stripe = stripe, .version = rec->version,
					  .index = (uint8_t)i, .server = rec->servers[i] };
		meta_batch_garbage_add(b, &g);
	}
}

struct release_ctx {
	struct meta_batch *b;
	uint64_t ino, end;
	int n;
};

static int release_one(void *arg, uint64_t stripe, const struct meta_stripe *rec)
{
	struct release_ctx *c = arg;

	if (c->end && stripe >= c->end)
		return 1;
	meta_batch_stripe_del(c->b, c->ino, stripe);
	stripe_garbage_add(c->b, c->ino, stripe, rec);
	c->n++;
	return 0;
}

int stripe_release(struct meta *meta, uint64_t ino, uint64_t from, uint64_t end,
		   struct meta_batch *b)
{
	struct release_ctx c = { .b = b, .ino = ino, .end = end };
	int r = meta_stripe_list(meta, ino, from, release_one, &c);

	return r < 0 ? r : c.n;
}

int stripe_purge_inode(struct meta *meta, uint64_t ino, struct meta_batch *b)
{
	int r;

	meta_batch_inode_del(b, ino);
	meta_batch_inline_del(b, ino);
	meta_batch_orphan_del(b, ino); /* idempotent: the orphan index stays exact */
	r = meta_batch_xattr_del_all(b, ino);
	if (r == 0)
		r = stripe_release(meta, ino, 0, 0, b);
	return r < 0 ? r : 0;
}

struct gc_collect {
	unsigned n;
	bool has_after;
	uint64_t after;
	uint64_t seq[STRIPE_GC_BATCH];
	struct meta_garbage g[STRIPE_GC_BATCH];
};

static int gc_collect_one(void *arg, uint64_t seq, const struct meta_garbage *g)
{
	struct gc_collect *c = arg;

	if (c->has_after && seq <= c->after)
		return 0;
	c->seq[c->n] = seq;
	c->g[c->n] = *g;
	return ++c->n == STRIPE_GC_BATCH ? 1 : 0;
}

int stripe_gc_pass(struct meta *meta, struct blockstore *bs, const struct stripe_servers *ss,
		   pthread_mutex_t *lock, bool has_after, uint64_t after, bool dry_run,
		   struct stripe_gc_pass *ret)
{
	const struct meta_superblock *sb = meta_superblock(meta);
	struct gc_collect *c = calloc(1, sizeof(*c));
	struct blockclient_op *ops = NULL;
	char (*keys)[PROTO_KEY_MAX] = NULL;
	uint64_t *seqs = NULL;
	struct meta_batch *b = NULL;
	struct stripe_gc_pass res = { 0 };
	int r;

	if (!c)
		return -ENOMEM;
	c->has_after = has_after;
	c->after = after;
	r = meta_garbage_list(meta, gc_collect_one, c);
	if (r < 0 || c->n == 0)
		goto out;
	res.listed = c->n;
	res.last_seq = c->seq[c->n - 1];
	if (dry_run)
		goto out;
	/* The commits that queued these entries (a map switched to a new version, a file
	 * removed) must be durable, in the metadata journal too, before their fragments go: a
	 * restore from the servers must never find a map whose fragments were deleted. */
	r = meta_journal_wait(meta, UINT64_MAX);
	if (r < 0)
		goto out;
	ops = calloc(c->n, sizeof(*ops));
	keys = calloc(c->n, sizeof(*keys));
	seqs = calloc(c->n, sizeof(*seqs));
	b = meta_batch_new(meta);
	if (!ops || !keys || !seqs || !b) {
		r = -ENOMEM;
		goto out;
	}
	unsigned nops = 0;
	for (unsigned i = 0; i < c->n; i++) {
		if (stripe_server_retired(ss, c->g[i].server) ||
		    !meta_server_find(sb, c->g[i].server)) {
			/* out of the list: nothing to delete there any more */
			meta_batch_garbage_del(b, c->seq[i]);
			res.settled++;
			continue;
		}
		proto_frag_key(keys[nops], sizeof(keys[nops]), sb->fs_uuid, c->g[i].ino,
			       c->g[i].stripe, c->g[i].version, c->g[i].index);
		ops[nops] = (struct blockclient_op){ .method = BC_DELETE, .server = c->g[i].server,
						     .key = keys[nops] };
		seqs[nops++] = c->seq[i];
	}
	if (nops)
		blockstore_run(bs, ops, nops, false);
	for (unsigned i = 0; i < nops; i++) {
		/* -EINVAL: a server the store does not know */
		if (ops[i].result == 0 || ops[i].result == -ENOENT || ops[i].result == -EINVAL) {
			meta_batch_garbage_del(b, seqs[i]);
			res.settled++;
		}
	}
	if (res.settled) {
		if (lock)
			pthread_mutex_lock(lock);
		r = meta_commit(meta, b, false);
		if (lock)
			pthread_mutex_unlock(lock);
	}
out:
	meta_batch_free(b);
	free(seqs);
	free(keys);
	free(ops);
	free(c);
	if (r < 0)
		return r;
	*ret = res;
	return 0;
}
