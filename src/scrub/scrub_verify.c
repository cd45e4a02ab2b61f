/*
 * scrub_verify: the verify half of the stripes phase: each stripe's fragments are read
 * (a HEAD, or the whole fragment with --deep) and checked against the stripe map; a
 * damaged stripe goes to the repair heap (scrub_repair.c) with what was found.
 */
#include "scrub_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

/* ---------------------------------------------------------------- verify */

static void frag_event(struct scrub *s, enum scrub_event_kind kind, const struct vitem *it,
		       unsigned i, const char *msg)
{
	uint64_t S = s->sb->stripe_size;
	char key[PROTO_KEY_MAX];

	proto_frag_key(key, sizeof(key), s->sb->fs_uuid, it->ino, it->stripe, it->rec.version, i);
	pthread_mutex_lock(&s->lock);
	if (kind == SCRUB_EV_FRAG_MISSING)
		s->st.frags_missing++;
	else if (kind == SCRUB_EV_FRAG_UNREACHABLE)
		s->st.frags_unreachable++;
	else
		s->st.frags_corrupt++;
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){
		.kind = kind, .ino = it->ino, .stripe = it->stripe, .index = (int)i,
		.server = it->rec.present & (1ull << i) ? it->rec.servers[i] : -1,
		.off = it->stripe * S, .len = it->rec.data_len, .key = key, .msg = msg });
}

void scrub_stripe_lost(struct run *run, uint64_t ino, uint64_t stripe, uint64_t len,
			bool fixable_never, const char *msg)
{
	struct scrub *s = run->s;
	char path[PATH_MAX];
	bool have = scrub_path(s, ino, path, sizeof(path)) >= 0;

	pthread_mutex_lock(&s->lock);
	if (fixable_never)
		s->st.stripes_lost++;
	else
		s->st.stripes_failed++;
	s->st.errors_left++;
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){
		.kind = fixable_never ? SCRUB_EV_STRIPE_LOST : SCRUB_EV_STRIPE_FAILED, .ino = ino,
		.stripe = stripe, .index = -1, .server = -1,
		.off = stripe * s->sb->stripe_size, .len = len, .path = have ? path : NULL,
		.msg = msg });
}

/* Reports a stripe with fewer than k good fragments: lost when even the fragments on servers
 * that did not answer could not make k, else unavailable (not repaired: check again when the
 * servers are back). */
void scrub_stripe_short(struct run *run, const struct dmg *d, const struct meta_stripe *rec)
{
	const int good = __builtin_popcountll(d->good), away = __builtin_popcountll(d->unreach);
	char msg[160];

	if (good + away >= (int)rec->k) {
		snprintf(msg, sizeof(msg),
			 "only %d of %u fragments good and %d on servers that do not answer (or refuse "
			 "the key), %u needed: unavailable, not lost",
			 good, rec->k + rec->m, away, rec->k);
		scrub_stripe_lost(run, d->ino, d->stripe, rec->data_len, false, msg);
		return;
	}
	snprintf(msg, sizeof(msg), "only %d of %u fragments good, %u needed", good,
		 rec->k + rec->m, rec->k);
	scrub_stripe_lost(run, d->ino, d->stripe, rec->data_len, true, msg);
}

/* Whether the map of (ino, stripe) is still at `version`: in mounted mode the filesystem may
 * have rewritten or removed the stripe since it was read (a metadata error counts as
 * unchanged: the stripe is then reported as found). */
bool scrub_stripe_unchanged(struct scrub *s, uint64_t ino, uint64_t stripe, uint64_t version)
{
	struct meta_stripe cur;
	int r = meta_stripe_get(s->meta, ino, stripe, &cur);

	if (r < 0)
		return r != -ENOENT;
	return cur.version == version;
}

void scrub_count_changed(struct scrub *s)
{
	pthread_mutex_lock(&s->lock);
	s->st.stripes_changed++;
	pthread_mutex_unlock(&s->lock);
}

void scrub_stripes_progress(struct run *run, bool force)
{
	struct scrub *s = run->s;

	pthread_mutex_lock(&s->lock);
	uint64_t done = run->done, total = TESSERA_MAX(run->done, run->total_estimate);
	uint64_t nb = s->st.bytes_checked + s->st.bytes_rebuilt;
	pthread_mutex_unlock(&s->lock);
	scrub_progress(s, "stripes", done, total, nb, force);
}

int scrub_repair_queue(struct run *run, const struct dmg *d);

void scrub_verify_stripe(struct run *run, struct worker *w, void *item)
{
	struct scrub *s = run->s;
	struct vitem *it = item;
	const struct meta_stripe *rec = &it->rec;
	const bool deep = s->opt.deep;
	struct blockclient_op ops[128];
	char keys[64][PROTO_KEY_MAX];
	int op_of[64][2];
	uint8_t hdrs[64][PROTO_FRAG_HDR_SIZE];
	enum scrub_event_kind bad_kind[64];
	const char *bad_msg[64];
	uint64_t good = 0, bad = 0, bytes = 0;
	unsigned nops = 0, n;

	if (stripe_rec_check(rec, s->codec) < 0) {
		if (scrub_stripe_unchanged(s, it->ino, it->stripe, rec->version))
			scrub_stripe_lost(run, it->ino, it->stripe, rec->data_len, true,
					  "stripe map record does not match the filesystem's geometry");
		else
			scrub_count_changed(s);
		goto done;
	}
	n = (unsigned)rec->k + rec->m;
	const size_t slot = PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len;
	uint8_t *buf = deep ? scrub_worker_buf(w, stripe_buf_size(rec)) : NULL;
	if (deep && !buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
#define FINDING(i, k, m)                          \
	do {                                      \
		bad |= 1ull << (i);               \
		bad_kind[i] = (k);                \
		bad_msg[i] = (m);                 \
	} while (0)
	for (unsigned i = 0; i < n; i++) {
		op_of[i][0] = op_of[i][1] = -1;
		if (!(rec->present & (1ull << i))) {
			FINDING(i, SCRUB_EV_FRAG_MISSING, "never stored");
			continue;
		}
		if (stripe_server_pos(&s->ss, rec->servers[i]) < 0) {
			FINDING(i, SCRUB_EV_FRAG_MISSING,
				meta_server_find(s->sb, rec->servers[i]) ? "its server is retired"
									 : "its server left the list");
			continue;
		}
		proto_frag_key(keys[i], sizeof(keys[i]), s->sb->fs_uuid, it->ino, it->stripe,
			       rec->version, i);
		if (deep) {
			op_of[i][0] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[i],
				.buf = stripe_slot(buf, rec, i), .buf_size = slot };
		} else {
			op_of[i][0] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_HEAD, .server = rec->servers[i], .key = keys[i] };
			op_of[i][1] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[i],
				.buf = hdrs[i], .buf_size = PROTO_FRAG_HDR_SIZE,
				.range_off = 0, .range_len = PROTO_FRAG_HDR_SIZE };
		}
	}
	if (nops) {
		scrub_rate_take(s, deep ? (uint64_t)nops * slot
					: (uint64_t)(nops / 2) * PROTO_FRAG_HDR_SIZE);
		blockstore_run(s->bs, ops, nops, false);
	}
	for (unsigned i = 0; i < n; i++) {
		if (op_of[i][0] < 0)
			continue;
		struct blockclient_op *a = &ops[op_of[i][0]];
		struct blockclient_op *b = op_of[i][1] >= 0 ? &ops[op_of[i][1]] : NULL;
		int r = a->result ? a->result : b ? b->result : 0;
		if (scrub_transport_error(r))
			scrub_mark_down(run, rec->servers[i]);
		if (r == -ENOENT) {
			FINDING(i, SCRUB_EV_FRAG_MISSING, "no such object");
			continue;
		}
		if (r == -EMSGSIZE || r == -ERANGE) {
			FINDING(i, SCRUB_EV_FRAG_CORRUPT, "wrong size");
			continue;
		}
		if (r < 0) {
			FINDING(i, SCRUB_EV_FRAG_UNREACHABLE, strerror(-r));
			continue;
		}
		if (deep) {
			bytes += a->result_len;
			if (!stripe_frag_check(s->sb->fs_uuid, stripe_slot(buf, rec, i),
					       a->result_len, true, it->ino, it->stripe, rec, i,
					       NULL)) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT,
					a->result_len != slot ? "wrong size" : "bad header or crc32c");
				continue;
			}
		} else {
			bytes += b->result_len;
			if (a->result_len != slot) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT, "wrong size");
				continue;
			}
			if (!stripe_frag_check(s->sb->fs_uuid, hdrs[i], b->result_len, false,
					       it->ino, it->stripe, rec, i, NULL)) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT, "bad header");
				continue;
			}
		}
		good |= 1ull << i;
	}
#undef FINDING
	pthread_mutex_lock(&s->lock);
	s->st.fragments += n;
	s->st.bytes_checked += bytes;
	pthread_mutex_unlock(&s->lock);
	/* A stripe the filesystem rewrote meanwhile: its old fragments may be deleted already
	 * (garbage), which is not damage. */
	if (bad && !scrub_stripe_unchanged(s, it->ino, it->stripe, rec->version)) {
		scrub_count_changed(s);
		goto done;
	}
	for (unsigned i = 0; i < n; i++)
		if (bad & (1ull << i))
			frag_event(s, bad_kind[i], it, i, bad_msg[i]);
	if (bad || (rec->flags & META_STRIPE_F_DEGRADED)) {
		uint64_t unreach = 0;
		for (unsigned i = 0; i < n; i++)
			if ((bad & (1ull << i)) && bad_kind[i] == SCRUB_EV_FRAG_UNREACHABLE)
				unreach |= 1ull << i;
		int r = scrub_repair_queue(run, &(struct dmg){ .ino = it->ino, .stripe = it->stripe,
							.version = rec->version, .good = good,
							.unreach = unreach, .flags = rec->flags });
		if (r < 0)
			run->fatal = r;
		pthread_mutex_lock(&s->lock);
		s->st.stripes_damaged++;
		pthread_mutex_unlock(&s->lock);
	}
done:
	pthread_mutex_lock(&s->lock);
	s->st.stripes++;
	run->done++;
	pthread_mutex_unlock(&s->lock);
	scrub_stripes_progress(run, false);
}
