/*
 * meta_journal: what the metadata journal (src/journal) sees of the store.
 *
 * Every batch records its changes twice: in its RocksDB WriteBatch and, while a journal sink
 * is attached, in a byte string of operations in the format below (the "ops"), which
 * meta_commit() hands to the sink under the store's journal lock together with the batch's
 * sequence number, in the order RocksDB applied the batches. The same lock makes a dump (a
 * checkpoint) a snapshot at an exact sequence number. The position (epoch, last sequence) is
 * written in each journaled batch itself (system key "journal"), so after a crash the
 * database knows exactly which records it holds.
 *
 * Ops format, one after another, integers big-endian:
 *   put:  0x01, cf(1), key length(2), value length(4), key, value
 *   del:  0x02, cf(1), key length(2), key
 * cf is enum meta_cf (meta_db.h); the numbers are part of the format and never change.
 * Operation 0x03 is reserved for file bytes carried in the journal.
 */
#include "meta_db.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"

#define OP_PUT 0x01
#define OP_DEL 0x02
#define JPOS_LEN 16

static const char META_KEY_JOURNAL[] = "journal";
/* Written by a commit made without the journal on a filesystem that has one (an offline tool):
 * the journal lacks that change, so the next start writes a checkpoint at once. */
static const char META_KEY_JOURNAL_GAP[] = "journal_gap";

static bool is_key(const char *k, size_t klen, const char *name)
{
	return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* Appends n bytes to the batch's ops; out of memory marks the batch (meta_commit refuses). */
static void ops_append(struct meta_batch *b, const void *p, size_t n)
{
	if (b->jlen + n > b->jcap) {
		size_t cap = b->jcap ? b->jcap : 256;
		while (cap < b->jlen + n)
			cap *= 2;
		uint8_t *nb = realloc(b->jbuf, cap);
		if (!nb) {
			b->err = -ENOMEM;
			return;
		}
		b->jbuf = nb;
		b->jcap = cap;
	}
	if (n)
		memcpy(b->jbuf + b->jlen, p, n);
	b->jlen += n;
}

void meta_journal_record(struct meta_batch *b, int op_del, int cf, const void *key, size_t klen,
			 const void *val, size_t vlen)
{
	uint8_t h[8];

	if (!b->m->sink.append)
		return;
	if (klen > 0xffff || vlen > 0xffffffffu) {
		meta_batch_poison(b, "journal record");
		return;
	}
	h[0] = op_del ? OP_DEL : OP_PUT;
	h[1] = (uint8_t)cf;
	be_put16(h + 2, (uint16_t)klen);
	if (op_del) {
		ops_append(b, h, 4);
		ops_append(b, key, klen);
		return;
	}
	be_put32(h + 4, (uint32_t)vlen);
	ops_append(b, h, 8);
	ops_append(b, key, klen);
	ops_append(b, val, vlen);
}

static void jpos_encode(uint8_t out[JPOS_LEN], uint64_t epoch, uint64_t seq)
{
	be_put64(out, epoch);
	be_put64(out + 8, seq);
}

int meta_journal_load(struct meta *m)
{
	rocksdb_pinnableslice_t *v = NULL;
	const uint8_t *p;
	size_t len;
	int r = meta_db_get(m, CF_SYSTEM, META_KEY_JOURNAL, strlen(META_KEY_JOURNAL), &v);

	m->jepoch = m->jseq = 0;
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	p = meta_slice_value(v, &len);
	if (len == JPOS_LEN) {
		m->jepoch = be_get64(p);
		m->jseq = be_get64(p + 8);
	} else {
		r = -EBADMSG;
	}
	rocksdb_pinnableslice_destroy(v);
	return r;
}

void meta_journal_pos(struct meta *m, uint64_t *ret_epoch, uint64_t *ret_seq)
{
	pthread_mutex_lock(&m->jlock);
	*ret_epoch = m->jepoch;
	*ret_seq = m->jseq;
	pthread_mutex_unlock(&m->jlock);
}

int meta_journal_attach(struct meta *m, const struct meta_journal_sink *sink, uint64_t epoch)
{
	uint8_t pos[JPOS_LEN];
	char *err = NULL;

	pthread_mutex_lock(&m->jlock);
	jpos_encode(pos, epoch, m->jseq);
	rocksdb_put_cf(m->db, m->wo_sync, m->cf[CF_SYSTEM], META_KEY_JOURNAL,
		       strlen(META_KEY_JOURNAL), (const char *)pos, sizeof(pos), &err);
	if (!err) {
		m->jepoch = epoch;
		m->sink = *sink;
	}
	pthread_mutex_unlock(&m->jlock);
	return err ? meta_err(err, "journal position") : 0;
}

void meta_journal_detach(struct meta *m)
{
	pthread_mutex_lock(&m->jlock);
	memset(&m->sink, 0, sizeof(m->sink));
	pthread_mutex_unlock(&m->jlock);
}

int meta_journal_write(struct meta *m, struct meta_batch *b, bool sync, uint64_t *ret_seq)
{
	uint8_t pos[JPOS_LEN];
	char *err = NULL;
	uint64_t seq;

	pthread_mutex_lock(&m->jlock);
	if (!m->sink.append) {
		pthread_mutex_unlock(&m->jlock);
		*ret_seq = 0;
		if (m->jepoch)
			rocksdb_writebatch_put_cf(b->wb, m->cf[CF_SYSTEM], META_KEY_JOURNAL_GAP,
						  strlen(META_KEY_JOURNAL_GAP), "", 0);
		rocksdb_write(m->db, sync ? m->wo_sync : m->wo, b->wb, &err);
		return err ? meta_err(err, "commit") : 0;
	}
	seq = m->jseq + 1;
	jpos_encode(pos, m->jepoch, seq);
	rocksdb_writebatch_put_cf(b->wb, m->cf[CF_SYSTEM], META_KEY_JOURNAL,
				  strlen(META_KEY_JOURNAL), (const char *)pos, sizeof(pos));
	rocksdb_write(m->db, m->wo, b->wb, &err);
	if (!err) {
		m->jseq = seq;
		m->sink.append(m->sink.ctx, seq, b->jbuf, b->jlen);
	}
	pthread_mutex_unlock(&m->jlock);
	*ret_seq = seq;
	return err ? meta_err(err, "commit") : 0;
}

int meta_journal_wait(struct meta *m, uint64_t seq)
{
	struct meta_journal_sink s;

	pthread_mutex_lock(&m->jlock);
	s = m->sink;
	if (seq == UINT64_MAX)
		seq = m->jseq;
	pthread_mutex_unlock(&m->jlock);
	return s.wait && seq ? s.wait(s.ctx, seq) : 0;
}

/* ---- applying ops (restore, replay) ---- */

int meta_journal_ops_check(const void *ops, size_t len)
{
	const uint8_t *p = ops, *end = p + len;

	while (p < end) {
		size_t need;
		if (end - p < 4 || (p[0] != OP_PUT && p[0] != OP_DEL) || p[1] == CF_DEFAULT ||
		    p[1] >= CF_COUNT)
			return -EBADMSG;
		if (p[0] == OP_DEL) {
			need = 4 + (size_t)be_get16(p + 2);
		} else {
			if (end - p < 8)
				return -EBADMSG;
			need = 8 + (size_t)be_get16(p + 2) + be_get32(p + 4);
		}
		if ((size_t)(end - p) < need)
			return -EBADMSG;
		p += need;
	}
	return 0;
}

int meta_journal_apply(struct meta *m, const void *ops, size_t len, uint64_t epoch, uint64_t seq)
{
	rocksdb_writebatch_t *wb;
	const uint8_t *p = ops, *end = p + len;
	uint8_t pos[JPOS_LEN];
	char *err = NULL;
	int r = meta_journal_ops_check(ops, len);

	if (r < 0)
		return r;
	wb = rocksdb_writebatch_create();
	while (p < end) {
		size_t klen = be_get16(p + 2);
		if (p[0] == OP_DEL) {
			rocksdb_writebatch_delete_cf(wb, m->cf[p[1]], (const char *)p + 4, klen);
			p += 4 + klen;
		} else {
			size_t vlen = be_get32(p + 4);
			rocksdb_writebatch_put_cf(wb, m->cf[p[1]], (const char *)p + 8, klen,
						  (const char *)p + 8 + klen, vlen);
			p += 8 + klen + vlen;
		}
	}
	/* a dump carries its own position (seq 0 here: the caller sets it at the end) */
	if (seq) {
		jpos_encode(pos, epoch, seq);
		rocksdb_writebatch_put_cf(wb, m->cf[CF_SYSTEM], META_KEY_JOURNAL,
					  strlen(META_KEY_JOURNAL), (const char *)pos, sizeof(pos));
	}
	pthread_mutex_lock(&m->jlock);
	rocksdb_write(m->db, m->wo, wb, &err);
	if (!err && seq) {
		m->jepoch = epoch;
		m->jseq = seq;
	}
	pthread_mutex_unlock(&m->jlock);
	rocksdb_writebatch_destroy(wb);
	return err ? meta_err(err, "journal apply") : 0;
}

/* ---- dumps (checkpoints) ---- */

struct dump {
	uint8_t *buf;
	size_t len, cap, chunk;
	meta_dump_fn fn;
	void *ctx;
};

static int dump_flush(struct dump *d)
{
	int r = 0;

	if (d->len)
		r = d->fn(d->ctx, d->buf, d->len);
	d->len = 0;
	return r;
}

static int dump_put(struct dump *d, int cf, const char *k, size_t klen, const char *v,
		    size_t vlen)
{
	size_t need = 8 + klen + vlen;

	if (klen > 0xffff)
		return -EBADMSG;
	if (d->len + need > d->chunk && d->len) {
		int r = dump_flush(d);
		if (r < 0)
			return r;
	}
	if (need > d->cap) {
		uint8_t *nb = realloc(d->buf, need);
		if (!nb)
			return -ENOMEM;
		d->buf = nb;
		d->cap = need;
	}
	uint8_t *p = d->buf + d->len;
	p[0] = OP_PUT;
	p[1] = (uint8_t)cf;
	be_put16(p + 2, (uint16_t)klen);
	be_put32(p + 4, (uint32_t)vlen);
	if (klen)
		memcpy(p + 8, k, klen);
	if (vlen)
		memcpy(p + 8 + klen, v, vlen);
	d->len += need;
	return 0;
}

int meta_journal_dump(struct meta *m, size_t chunk, meta_dump_fn fn, void *ctx,
		      uint64_t *ret_epoch, uint64_t *ret_seq)
{
	struct dump d = { .chunk = chunk ? chunk : (1u << 20), .fn = fn, .ctx = ctx };
	const rocksdb_snapshot_t *snap;
	rocksdb_readoptions_t *ro;
	char *err = NULL;
	int r = 0;

	d.cap = d.chunk;
	d.buf = malloc(d.cap);
	if (!d.buf)
		return -ENOMEM;
	pthread_mutex_lock(&m->jlock);
	snap = rocksdb_create_snapshot(m->db);
	*ret_epoch = m->jepoch;
	*ret_seq = m->jseq;
	pthread_mutex_unlock(&m->jlock);
	ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_snapshot(ro, snap);
	rocksdb_readoptions_set_fill_cache(ro, 0);
	for (int cf = CF_INODES; cf < CF_COUNT && r == 0; cf++) {
		rocksdb_iterator_t *it = rocksdb_create_iterator_cf(m->db, ro, m->cf[cf]);
		for (rocksdb_iter_seek_to_first(it); r == 0 && rocksdb_iter_valid(it);
		     rocksdb_iter_next(it)) {
			size_t klen, vlen;
			const char *k = rocksdb_iter_key(it, &klen);
			const char *v = rocksdb_iter_value(it, &vlen);
			if (cf == CF_SYSTEM && (is_key(k, klen, META_KEY_JOURNAL) ||
						is_key(k, klen, META_KEY_JOURNAL_GAP)))
				continue; /* the restore writes its own position */
			r = dump_put(&d, cf, k, klen, v, vlen);
		}
		if (r == 0) {
			rocksdb_iter_get_error(it, &err);
			if (err)
				r = meta_err(err, "dump");
		}
		rocksdb_iter_destroy(it);
	}
	if (r == 0)
		r = dump_flush(&d);
	rocksdb_readoptions_destroy(ro);
	rocksdb_release_snapshot(m->db, snap);
	free(d.buf);
	return r;
}

int meta_journal_set_pos(struct meta *m, uint64_t epoch, uint64_t seq)
{
	uint8_t pos[JPOS_LEN];
	char *err = NULL;

	jpos_encode(pos, epoch, seq);
	pthread_mutex_lock(&m->jlock);
	rocksdb_put_cf(m->db, m->wo_sync, m->cf[CF_SYSTEM], META_KEY_JOURNAL,
		       strlen(META_KEY_JOURNAL), (const char *)pos, sizeof(pos), &err);
	if (!err) {
		m->jepoch = epoch;
		m->jseq = seq;
	}
	pthread_mutex_unlock(&m->jlock);
	return err ? meta_err(err, "journal position") : 0;
}

int meta_journal_gap(struct meta *m)
{
	rocksdb_pinnableslice_t *v = NULL;
	int r = meta_db_get(m, CF_SYSTEM, META_KEY_JOURNAL_GAP, strlen(META_KEY_JOURNAL_GAP), &v);

	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

int meta_journal_gap_clear(struct meta *m)
{
	char *err = NULL;

	rocksdb_delete_cf(m->db, m->wo_sync, m->cf[CF_SYSTEM], META_KEY_JOURNAL_GAP,
			  strlen(META_KEY_JOURNAL_GAP), &err);
	return err ? meta_err(err, "journal gap") : 0;
}
