/*
 * journal_obj: the journal's objects on the servers: their keys, their encoding, the catalog of
 * what the servers hold, and the replay of records (shared by the mount's catch-up and by the
 * restore).
 *
 * Segment, checkpoint part and manifest share one header (40 bytes, big-endian):
 *   0  magic        8   "TSJSEG01", "TSJCKP01" or "TSJMAN01"
 *   8  epoch        8
 *  16  seq          8   segment: first record; part and manifest: the checkpoint's sequence
 *  24  last         8   segment: last record; part: its index; manifest: the number of parts
 *  32  count        4   records that follow (manifest: 0)
 *  36  header crc   4   crc32c of bytes 0..35
 * then, in segments and parts, `count` records:
 *   seq(8) length(4) crc32c(4) of seq, length and the payload, then the payload (meta ops);
 *   in a part, seq is the record's index in the checkpoint;
 * and in a manifest: the crc32c of each whole part object (4 each), then the crc32c of the
 * manifest before it (4).
 */
#include "journal_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/meta.h"

static const char *const magics[] = { [JOBJ_SEG] = "TSJSEG01", [JOBJ_PART] = "TSJCKP01",
				      [JOBJ_MANIFEST] = "TSJMAN01" };

void jobj_header(uint8_t out[JHDR_LEN], int kind, uint64_t epoch, uint64_t seq, uint64_t last,
		 uint32_t count)
{
	memcpy(out, magics[kind], 8);
	be_put64(out + 8, epoch);
	be_put64(out + 16, seq);
	be_put64(out + 24, last);
	be_put32(out + 32, count);
	be_put32(out + 36, tcrc32c(0, out, 36));
}

size_t jrec_encode(uint8_t *out, uint64_t seq, const void *payload, size_t len)
{
	be_put64(out, seq);
	be_put32(out + 8, (uint32_t)len);
	uint32_t crc = tcrc32c(0, out, 12);
	be_put32(out + 12, tcrc32c(crc, payload, len));
	if (len) /* an empty batch (only the position) has no payload */
		memcpy(out + JREC_HDR, payload, len);
	return JREC_HDR + len;
}

int jobj_check(const uint8_t *obj, size_t len, int kind, struct jobj_hdr *h)
{
	if (len < JHDR_LEN || memcmp(obj, magics[kind], 8) != 0 ||
	    be_get32(obj + 36) != tcrc32c(0, obj, 36))
		return -EBADMSG;
	h->epoch = be_get64(obj + 8);
	h->seq = be_get64(obj + 16);
	h->last = be_get64(obj + 24);
	h->count = be_get32(obj + 32);
	return 0;
}

int jobj_records(const uint8_t *obj, size_t len, const struct jobj_hdr *h, jrec_fn fn, void *ctx)
{
	size_t off = JHDR_LEN;

	for (uint32_t i = 0; i < h->count; i++) {
		if (len - off < JREC_HDR)
			return -EBADMSG;
		const uint8_t *p = obj + off;
		uint64_t seq = be_get64(p);
		size_t plen = be_get32(p + 8);
		if (len - off - JREC_HDR < plen)
			return -EBADMSG;
		uint32_t crc = tcrc32c(0, p, 12);
		if (tcrc32c(crc, p + JREC_HDR, plen) != be_get32(p + 12))
			return -EBADMSG;
		int r = fn(ctx, seq, p + JREC_HDR, plen);
		if (r != 0)
			return r < 0 ? r : 0;
		off += JREC_HDR + plen;
	}
	return 0;
}

/* ---- keys ---- */

void jkey_prefix(char out[JKEY_MAX], const uint8_t uuid[16])
{
	char u[37];

	tuuid_format(uuid, u);
	snprintf(out, JKEY_MAX, "%s/journal/", u);
}

void jkey_segment(char out[JKEY_MAX], const uint8_t uuid[16], uint64_t first, uint64_t last,
		  uint64_t epoch)
{
	char u[37];

	tuuid_format(uuid, u);
	snprintf(out, JKEY_MAX, "%s/journal/seg-%016llx-%016llx-%016llx", u,
		 (unsigned long long)first, (unsigned long long)last, (unsigned long long)epoch);
}

void jkey_ckpt(char out[JKEY_MAX], const uint8_t uuid[16], uint64_t seq, uint64_t epoch,
	       long part)
{
	char u[37];

	tuuid_format(uuid, u);
	if (part < 0)
		snprintf(out, JKEY_MAX, "%s/journal/ckpt-%016llx-%016llx-manifest", u,
			 (unsigned long long)seq, (unsigned long long)epoch);
	else
		snprintf(out, JKEY_MAX, "%s/journal/ckpt-%016llx-%016llx-%06ld", u,
			 (unsigned long long)seq, (unsigned long long)epoch, part);
}

void jkey_marker(char out[JKEY_MAX], const uint8_t uuid[16])
{
	char u[37];

	tuuid_format(uuid, u);
	snprintf(out, JKEY_MAX, "%s%s", JMARKER_PREFIX, u);
}

static int hex16(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		int d = thex_digit(s[i]);
		if (d < 0)
			return -EINVAL;
		v = v << 4 | (unsigned)d;
	}
	*ret = v;
	return 0;
}

/* Parses the part of a key after "<uuid>/journal/". 0 or -EINVAL. */
static int jkey_parse(const char *s, struct jentry *e)
{
	memset(e, 0, sizeof(*e));
	if (strncmp(s, "seg-", 4) == 0 && strlen(s) == 4 + 16 * 3 + 2 && s[20] == '-' &&
	    s[37] == '-') {
		e->kind = JOBJ_SEG;
		return hex16(s + 4, &e->seq) || hex16(s + 21, &e->last) ||
		       hex16(s + 38, &e->epoch) || e->last < e->seq ? -EINVAL : 0;
	}
	if (strncmp(s, "ckpt-", 5) != 0 || strlen(s) < 5 + 33 + 1 || s[21] != '-' || s[38] != '-')
		return -EINVAL;
	if (hex16(s + 5, &e->seq) || hex16(s + 22, &e->epoch))
		return -EINVAL;
	if (strcmp(s + 39, "manifest") == 0) {
		e->kind = JOBJ_MANIFEST;
		return 0;
	}
	uint64_t part;
	if (strlen(s + 39) != 6 || tparse_uint(s + 39, 0, 999999, &part) < 0)
		return -EINVAL;
	e->kind = JOBJ_PART;
	e->last = part;
	return 0;
}

/* ---- the catalog ---- */

static int jentry_cmp(const void *a, const void *b)
{
	const struct jentry *x = a, *y = b;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	if (x->epoch != y->epoch)
		return x->epoch < y->epoch ? -1 : 1;
	if (x->last != y->last)
		return x->last < y->last ? -1 : 1;
	return 0;
}

void jcat_free(struct jcat *c)
{
	free(c->e);
	memset(c, 0, sizeof(*c));
}

static int jcat_add(struct jcat *c, const struct jentry *e, size_t holder)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct jentry *ne = realloc(c->e, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		c->e = ne;
		c->cap = cap;
	}
	c->e[c->n] = *e;
	c->e[c->n].holders[holder / 64] |= 1ull << (holder % 64);
	c->n++;
	return 0;
}

int jcat_list(struct jcat *c, struct blockstore *bs, const uint16_t *ids, size_t n,
	      const uint8_t uuid[16])
{
	struct blockclient_object *objs = malloc(BLOCKCLIENT_LIST_MAX_KEYS * sizeof(*objs));
	char prefix[JKEY_MAX], token[BLOCKCLIENT_LIST_KEY_MAX + 1], next[BLOCKCLIENT_LIST_KEY_MAX + 1];
	size_t plen, answered = 0;
	int r = 0;

	memset(c, 0, sizeof(*c));
	if (!objs)
		return -ENOMEM;
	jkey_prefix(prefix, uuid);
	plen = strlen(prefix);
	for (size_t s = 0; s < n && s < JMAX_HOLDERS && r >= 0; s++) {
		token[0] = 0;
		for (;;) {
			size_t got = 0;
			int lr = blockstore_list(bs, ids[s], prefix, token, objs,
						 BLOCKCLIENT_LIST_MAX_KEYS, &got, next, sizeof(next));
			if (lr == -ENOENT) { /* no bucket yet: holds nothing */
				answered++;
				break;
			}
			if (lr < 0) {
				tlog_debug("journal: cannot list server %u: %s", ids[s],
					   strerror(-lr));
				break;
			}
			for (size_t i = 0; i < got && r >= 0; i++) {
				struct jentry e;
				if (strncmp(objs[i].key, prefix, plen) != 0 ||
				    jkey_parse(objs[i].key + plen, &e) < 0)
					continue;
				e.size = objs[i].size;
				e.mtime_s = objs[i].mtime_s;
				r = jcat_add(c, &e, s);
			}
			if (!next[0]) {
				answered++;
				break;
			}
			snprintf(token, sizeof(token), "%s", next);
		}
	}
	free(objs);
	if (r < 0) {
		jcat_free(c);
		return r;
	}
	/* one entry per object, with every server that holds it */
	if (c->n)
		qsort(c->e, c->n, sizeof(c->e[0]), jentry_cmp);
	size_t w = 0;
	for (size_t i = 0; i < c->n; i++) {
		if (w && jentry_cmp(&c->e[w - 1], &c->e[i]) == 0) {
			for (int k = 0; k < JMAX_HOLDERS / 64; k++)
				c->e[w - 1].holders[k] |= c->e[i].holders[k];
			if (c->e[i].size > c->e[w - 1].size)
				c->e[w - 1].size = c->e[i].size;
			if (c->e[i].mtime_s > c->e[w - 1].mtime_s)
				c->e[w - 1].mtime_s = c->e[i].mtime_s;
			continue;
		}
		c->e[w++] = c->e[i];
	}
	c->n = w;
	c->answered = answered;
	return answered ? 0 : -EIO;
}

/* Reads the object of e (key) whole from one of its holders that has it intact (check passes).
 * Returns 0 and *ret (free()), *ret_len; -EIO when no holder gave an intact copy. */
int jobj_fetch(struct blockstore *bs, const uint16_t *ids, const struct jentry *e, const char *key,
	       int (*check)(void *ctx, const uint8_t *obj, size_t len), void *ctx, uint8_t **ret,
	       size_t *ret_len)
{
	for (size_t s = 0; s < JMAX_HOLDERS; s++) {
		if (!(e->holders[s / 64] & (1ull << (s % 64))))
			continue;
		size_t size = e->size ? e->size : 1;
		uint8_t *buf = malloc(size);
		if (!buf)
			return -ENOMEM;
		struct blockclient_op op = { .method = BC_GET, .server = ids[s], .key = key,
					     .buf = buf, .buf_size = size };
		blockstore_run(bs, &op, 1, true);
		/* copies may differ in length (a truncated one): the check decides */
		if (op.result == 0 && check(ctx, buf, op.result_len) == 0) {
			*ret = buf;
			*ret_len = op.result_len;
			return 0;
		}
		tlog_warn("journal: '%s' on server %u is %s", key, ids[s],
			  op.result ? strerror(-op.result) : "damaged");
		free(buf);
	}
	return -EIO;
}

/* ---- replay ---- */

struct apply_ctx {
	struct meta *meta;
	uint64_t epoch, next, limit; /* apply seq next..limit */
	uint64_t applied;
	int err;
};

static int apply_rec(void *ctx, uint64_t seq, const void *p, size_t len)
{
	struct apply_ctx *a = ctx;

	if (seq < a->next)
		return 0; /* already applied (an overlapping segment) */
	if (seq > a->limit)
		return 1;
	if (seq != a->next)
		return -EBADMSG;
	int r = meta_journal_apply(a->meta, p, len, a->epoch, seq);
	if (r < 0) {
		a->err = r;
		return r;
	}
	a->next++;
	a->applied++;
	return 0;
}

static int rec_ok(void *ctx, uint64_t seq, const void *p, size_t len)
{
	(void)ctx;
	(void)seq;
	return meta_journal_ops_check(p, len);
}

static int seg_check(void *ctx, const uint8_t *obj, size_t len)
{
	const struct jentry *e = ctx;
	struct jobj_hdr h;

	if (jobj_check(obj, len, JOBJ_SEG, &h) < 0 || h.epoch != e->epoch || h.seq != e->seq ||
	    h.last != e->last || h.count != e->last - e->seq + 1)
		return -EBADMSG;
	/* every record's crc, so that a copy damaged anywhere gives way to another one */
	return jobj_records(obj, len, &h, rec_ok, NULL);
}

int jreplay(struct meta *meta, struct blockstore *bs, const uint16_t *ids, const struct jcat *c,
	    const uint8_t uuid[16], uint64_t *epoch, uint64_t *seq, uint64_t max_epoch,
	    struct jreplay_stats *st, char *why, size_t why_size)
{
	why[0] = 0;
	for (;;) {
		uint64_t want = *seq + 1;
		const struct jentry *best = NULL;
		/* among the segments that hold record `want`, of this epoch or later: the latest
		 * epoch (it replaced what earlier ones wrote from its first record on), then the
		 * longest */
		for (size_t i = 0; i < c->n; i++) {
			const struct jentry *e = &c->e[i];
			if (e->kind != JOBJ_SEG || e->seq > want || e->last < want ||
			    e->epoch < *epoch || e->epoch > max_epoch || (e->flags & JE_BAD))
				continue;
			if (!best || e->epoch > best->epoch ||
			    (e->epoch == best->epoch && e->last > best->last))
				best = e;
		}
		if (!best)
			return 0;
		/* An epoch continues the one before it from its first record on: applied on top of
		 * records of an earlier epoch only when it starts right after them. Otherwise the
		 * state reached so far has records that epoch never had (a divergent copy). */
		if (best->epoch > *epoch) {
			uint64_t first = UINT64_MAX;
			for (size_t i = 0; i < c->n; i++)
				if (c->e[i].kind == JOBJ_SEG && c->e[i].epoch == best->epoch &&
				    c->e[i].seq < first)
					first = c->e[i].seq;
			if (first != want) {
				snprintf(why, why_size, "epoch %llu starts at record %llu, not after "
					 "record %llu of epoch %llu: it does not continue this state",
					 (unsigned long long)best->epoch, (unsigned long long)first,
					 (unsigned long long)*seq, (unsigned long long)*epoch);
				return -ESTALE;
			}
		}
		/* a later epoch that starts after `want` takes over from its first record */
		uint64_t limit = best->last;
		for (size_t i = 0; i < c->n; i++) {
			const struct jentry *e = &c->e[i];
			if (e->kind == JOBJ_SEG && e->epoch > best->epoch && e->epoch <= max_epoch &&
			    e->seq > want && e->seq - 1 < limit && !(e->flags & JE_BAD))
				limit = e->seq - 1;
		}
		char key[JKEY_MAX];
		uint8_t *obj;
		size_t len;
		jkey_segment(key, uuid, best->seq, best->last, best->epoch);
		int r = jobj_fetch(bs, ids, best, key, seg_check, (void *)best, &obj, &len);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* no intact copy: another segment may hold the same records */
			((struct jentry *)best)->flags |= JE_BAD;
			snprintf(why, why_size, "no intact copy of segment %llu-%llu (epoch %llu)",
				 (unsigned long long)best->seq, (unsigned long long)best->last,
				 (unsigned long long)best->epoch);
			continue;
		}
		struct jobj_hdr h;
		struct apply_ctx a = { .meta = meta, .epoch = best->epoch, .next = want,
				       .limit = limit };
		jobj_check(obj, len, JOBJ_SEG, &h);
		r = jobj_records(obj, len, &h, apply_rec, &a);
		free(obj);
		st->records += a.applied;
		st->segments++;
		if (a.applied) {
			*epoch = best->epoch;
			*seq = a.next - 1;
		}
		if (a.err)
			return a.err;
		if (r < 0 || a.next <= want) {
			((struct jentry *)best)->flags |= JE_BAD;
			snprintf(why, why_size, "segment %llu-%llu (epoch %llu) is damaged",
				 (unsigned long long)best->seq, (unsigned long long)best->last,
				 (unsigned long long)best->epoch);
		}
	}
}
