/*
 * scrub: verify every fragment of every stripe, rebuild the damaged ones.
 *
 * This file runs the whole scrub (scrub_run) and holds the stripe phases; the namespace phase
 * is in scrub_ns.c, garbage collection in scrub_gc.c. The phases and their order are listed in
 * include/tessera/scrub.h and explained in doc/scrub.md.
 *
 * Threads and locks: scrub_run() runs on the caller's thread. The verify and repair phases
 * hand chunks of up to SCRUB_CHUNK stripes to opt.jobs worker threads (started per chunk), so
 * that several stripes are in flight; blockclient and the metadata reads are thread-safe.
 * s->lock protects the statistics, the callbacks, the damaged-stripe list and the pending
 * stripe-map updates. Metadata writes happen on the caller's thread only, between chunks.
 *
 * Design notes: repair invariants.
 *  R1. A rebuilt fragment keeps its stripe version and therefore its key. Encoding is
 *      deterministic, so the rebuilt object (header and payload) is byte for byte the one the
 *      data path stored: its crc32c must equal the crc in the stripe map, and a mismatch stops
 *      the repair of that stripe instead of writing anything. Rewriting a key on the same
 *      server replaces the object atomically (blockd renames), so a concurrent reader sees the
 *      old (missing or corrupt, and detected as such) or the correct object, never a mix.
 *      A new version would cost rewriting all k+m fragments and a garbage round for nothing.
 *  R2. A fragment moved to another server is stored there before the stripe map names that
 *      server (map updated only after the PUT answered). A crash in between leaves an
 *      unreferenced object, which --gc collects.
 *  R3. The copy a move leaves behind on the old server is NOT put on the garbage queue: the key
 *      is the same as the live one, and a later repair could move the fragment back to that
 *      server before the queue is drained, which would then delete live data. --gc removes such
 *      copies by listing, and it checks the current stripe map at deletion time.
 *  R4. Never two fragments of one stripe on one server: a target is never a server that holds
 *      (or is about to hold) another fragment of the stripe. Zones are honoured as in the data
 *      path: at most m fragments of a stripe per zone while other zones have room.
 *  R5. Fewer than k good fragments: nothing is written; the stripe is reported lost with its
 *      file's path and byte range.
 */
#include "scrub_int.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockclient.h"
#include "tessera/common.h"
#include "tessera/proto.h"
#include "tessera/stripe_io.h"

#define SCRUB_CHUNK 256
#define SCRUB_PROGRESS_NS 100000000ull
#define SCRUB_STATUS_MAX 16384
#define SCRUB_PATH_DEPTH 4096

/* A stripe found damaged by the verify phase. */
struct dmg {
	uint64_t ino, stripe, version;
	uint64_t good;   /* fragments that passed the check */
	uint32_t flags;
};

struct vitem {
	uint64_t ino, stripe;
	struct meta_stripe rec;
};

struct worker {
	uint8_t *buf;
	size_t buf_size;
};

/* Extra state of a run, kept out of struct scrub's public-ish part. */
struct run {
	struct scrub *s;
	bool srv_down[META_MAX_SERVERS];   /* by position in the superblock's list */
	struct dmg *dmg;
	size_t n_dmg, cap_dmg;
	struct vitem *chunk;
	size_t n_chunk;
	uint64_t total_estimate, done;
	/* pending stripe-map updates of the current repair chunk */
	struct vitem *pending;
	size_t n_pending;
	_Atomic int fatal;
};

/* ---------------------------------------------------------------- reporting */

void scrub_event(struct scrub *s, const struct scrub_event *ev)
{
	pthread_mutex_lock(&s->lock);
	if (ev->kind == SCRUB_EV_WARNING)
		s->st.warnings++;
	if (s->opt.on_event)
		s->opt.on_event(s->opt.ctx, ev);
	pthread_mutex_unlock(&s->lock);
}

void scrub_warn(struct scrub *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tlog_debug("scrub: %s", msg);
	scrub_event(s, &(struct scrub_event){ .kind = SCRUB_EV_WARNING, .index = -1,
					     .server = -1, .msg = msg });
}

void scrub_ns_event(struct scrub *s, uint64_t ino, bool fixed, const char *fmt, ...)
{
	char msg[512], path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bool have_path = ino && scrub_path(s, ino, path, sizeof(path)) >= 0;
	pthread_mutex_lock(&s->lock);
	s->st.ns_errors++;
	if (fixed) {
		s->st.ns_fixed++;
		s->st.errors_fixed++;
	} else {
		s->st.errors_left++;
	}
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){ .kind = SCRUB_EV_NAMESPACE, .fixed = fixed,
					     .ino = ino, .index = -1, .server = -1,
					     .path = have_path ? path : NULL, .msg = msg });
}

void scrub_progress(struct scrub *s, const char *phase, uint64_t done, uint64_t total,
		    uint64_t bytes, bool force)
{
	if (!s->opt.on_progress)
		return;
	uint64_t now = tclock_monotonic_ns();
	pthread_mutex_lock(&s->lock);
	if (force || now - s->progress_at_ns >= SCRUB_PROGRESS_NS) {
		s->progress_at_ns = now;
		s->opt.on_progress(s->opt.ctx, phase, done, total, bytes);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- inode table */

static size_t ino_hash(uint64_t ino, size_t cap)
{
	return (size_t)(placement_seed(ino, 0x5c) & (cap - 1));
}

struct scrub_inode *scrub_inode_find(struct scrub *s, uint64_t ino)
{
	if (!s->inodes_cap || ino == 0)
		return NULL;
	for (size_t i = ino_hash(ino, s->inodes_cap);; i = (i + 1) & (s->inodes_cap - 1)) {
		if (s->inodes[i].ino == ino)
			return &s->inodes[i];
		if (s->inodes[i].ino == 0)
			return NULL;
	}
}

struct scrub_inode *scrub_inode_add(struct scrub *s, uint64_t ino)
{
	struct scrub_inode *e = scrub_inode_find(s, ino);

	if (e)
		return e;
	if ((s->inodes_len + 1) * 2 > s->inodes_cap) {
		size_t cap = s->inodes_cap ? s->inodes_cap * 2 : 1024;
		struct scrub_inode *t = calloc(cap, sizeof(*t));
		if (!t)
			return NULL;
		for (size_t i = 0; i < s->inodes_cap; i++) {
			if (!s->inodes[i].ino)
				continue;
			size_t j = ino_hash(s->inodes[i].ino, cap);
			while (t[j].ino)
				j = (j + 1) & (cap - 1);
			t[j] = s->inodes[i];
		}
		free(s->inodes);
		s->inodes = t;
		s->inodes_cap = cap;
	}
	size_t j = ino_hash(ino, s->inodes_cap);
	while (s->inodes[j].ino)
		j = (j + 1) & (s->inodes_cap - 1);
	s->inodes[j] = (struct scrub_inode){ .ino = ino };
	s->inodes_len++;
	return &s->inodes[j];
}

/* ---------------------------------------------------------------- paths */

struct name_find {
	uint64_t ino;
	char name[META_NAME_MAX + 1];
};

static int name_find_cb(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	struct name_find *f = ctx;

	(void)mode;
	if (ino != f->ino)
		return 0;
	memcpy(f->name, name, name_len);
	f->name[name_len] = '\0';
	return 1;
}

int scrub_path(struct scrub *s, uint64_t ino, char *out, size_t size)
{
	char *tmp;
	size_t pos, len;
	int r = 0;

	if (size == 0)
		return -ENAMETOOLONG;
	if (ino == META_ROOT_INO) {
		if (size < 2)
			return -ENAMETOOLONG;
		memcpy(out, "/", 2);
		return 1;
	}
	if (!s->table_ready)
		return -ENOENT;
	tmp = malloc(size);
	if (!tmp)
		return -ENOMEM;
	/* Built right to left in tmp[0..size-1]. */
	pos = size - 1;
	tmp[pos] = '\0';
	for (int depth = 0; ino != META_ROOT_INO; depth++) {
		struct scrub_inode *e = scrub_inode_find(s, ino);
		struct name_find f = { .ino = ino };
		if (!e || !e->parent || depth >= SCRUB_PATH_DEPTH) {
			r = -ENOENT;
			goto out;
		}
		r = meta_dentry_list(s->meta, e->parent, NULL, 0, name_find_cb, &f);
		if (r < 0)
			goto out;
		len = strlen(f.name);
		if (len == 0) {
			r = -ENOENT;
			goto out;
		}
		if (len + 1 > pos) {
			r = -ENAMETOOLONG;
			goto out;
		}
		pos -= len;
		memcpy(tmp + pos, f.name, len);
		tmp[--pos] = '/';
		ino = e->parent;
	}
	len = size - 1 - pos;
	memcpy(out, tmp + pos, len + 1);
	r = (int)len;
out:
	free(tmp);
	return r;
}

/* ---------------------------------------------------------------- setup */

int scrub_credentials_load(const char *meta_dir, const struct meta_superblock *sb,
			   struct blockclient_config *cfg)
{
	const char *ak = NULL, *sk = NULL;
	char path[PATH_MAX], *buf = NULL;
	int r = 0;

	snprintf(cfg->bucket, sizeof(cfg->bucket), "%s", sb->bucket);
	snprintf(cfg->region, sizeof(cfg->region), "%s", sb->region);
	if (strncmp(sb->credentials, "file:", 5) == 0) {
		const char *f = sb->credentials + 5;
		int n = f[0] == '/' ? snprintf(path, sizeof(path), "%s", f)
				    : snprintf(path, sizeof(path), "%s/%s", meta_dir, f);
		if (n < 0 || (size_t)n >= sizeof(path))
			return -ENAMETOOLONG;
		r = tfile_read_all(path, 4096, &buf, NULL);
		if (r < 0)
			return r;
		char *save = NULL;
		ak = strtok_r(buf, " \t\r\n", &save);
		sk = ak ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	} else {
		ak = getenv("TESSERA_ACCESS_KEY");
		sk = getenv("TESSERA_SECRET_KEY");
	}
	if (!ak || !sk || strlen(ak) >= sizeof(cfg->access_key) ||
	    strlen(sk) >= sizeof(cfg->secret_key)) {
		r = -EINVAL;
		goto out;
	}
	snprintf(cfg->access_key, sizeof(cfg->access_key), "%s", ak);
	snprintf(cfg->secret_key, sizeof(cfg->secret_key), "%s", sk);
out:
	if (buf) {
		memset(buf, 0, strlen(buf));
		free(buf);
	}
	return r;
}

int scrub_new(struct meta *meta, struct blockclient *bc, const struct scrub_options *opt,
	      struct scrub **ret)
{
	const struct meta_superblock *sb = meta_superblock(meta);
	struct scrub *s;
	int r;

	if (!sb || !bc || sb->k == 0 || sb->m == 0 || sb->k + sb->m > 64 || sb->n_servers == 0)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->meta = meta;
	s->bc = bc;
	s->sb = sb;
	if (opt)
		s->opt = *opt;
	if (!s->opt.jobs)
		s->opt.jobs = 8;
	if (s->opt.jobs > SCRUB_MAX_JOBS)
		s->opt.jobs = SCRUB_MAX_JOBS;
	if (!s->opt.gc_grace_set)
		s->opt.gc_grace_s = 3600;
	s->k = sb->k;
	s->m = sb->m;
	s->n = sb->k + sb->m;
	s->n_servers = sb->n_servers;
	for (size_t i = 0; i < sb->n_servers; i++) {
		s->servers[i].id = sb->servers[i].id;
		s->servers[i].weight = sb->servers[i].weight ? sb->servers[i].weight : 1;
		s->servers[i].zone = sb->servers[i].zone;
		s->servers[i].up = true;
	}
	r = codec_new(s->k, s->m, &s->codec);
	if (r < 0) {
		free(s);
		return r;
	}
	pthread_mutex_init(&s->lock, NULL);
	*ret = s;
	return 0;
}

void scrub_free(struct scrub *s)
{
	if (!s)
		return;
	codec_free(s->codec);
	free(s->inodes);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Position of server id in the superblock's list, or -1. */
static int server_pos(const struct scrub *s, uint16_t id)
{
	for (size_t i = 0; i < s->n_servers; i++)
		if (s->servers[i].id == id)
			return (int)i;
	return -1;
}

static bool transport_error(int r)
{
	return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EHOSTDOWN;
}

static void mark_down(struct run *run, uint16_t id)
{
	int p = server_pos(run->s, id);

	if (p >= 0)
		run->srv_down[p] = true;
}

static bool server_healthy(struct run *run, uint16_t id)
{
	int p = server_pos(run->s, id);

	return p >= 0 && !run->srv_down[p] && blockclient_server_up(run->s->bc, id);
}

/* Asks every server for /-/status; those that do not answer are down for this run. */
static void probe_servers(struct run *run)
{
	struct scrub *s = run->s;
	struct blockclient_op *ops = calloc(s->n_servers, sizeof(*ops));
	char *bufs = malloc(s->n_servers * SCRUB_STATUS_MAX);

	if (!ops || !bufs)
		goto out;
	for (size_t i = 0; i < s->n_servers; i++)
		ops[i] = (struct blockclient_op){ .method = BC_GET, .server = s->servers[i].id,
						  .key = "-/status", .raw_path = true,
						  .buf = bufs + i * SCRUB_STATUS_MAX,
						  .buf_size = SCRUB_STATUS_MAX };
	blockclient_run(s->bc, ops, s->n_servers, true);
	for (size_t i = 0; i < s->n_servers; i++) {
		if (ops[i].result == 0)
			continue;
		run->srv_down[i] = true;
		scrub_warn(s, "server %u (%s) does not answer: %s", s->servers[i].id,
			   s->sb->servers[i].url, strerror(-ops[i].result));
	}
out:
	free(ops);
	free(bufs);
}

/* ---------------------------------------------------------------- worker pool */

struct pool {
	struct run *run;
	void *items;
	size_t n, item_size;
	_Atomic size_t next;
	void (*fn)(struct run *run, struct worker *w, void *item);
};

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	struct worker w = { 0 };

	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n)
			break;
		p->fn(p->run, &w, (char *)p->items + i * p->item_size);
	}
	free(w.buf);
	return NULL;
}

/* Runs fn on every item with up to opt.jobs threads; returns when all are done. */
static void pool_run(struct run *run, void *items, size_t n, size_t item_size,
		     void (*fn)(struct run *, struct worker *, void *))
{
	struct pool p = { .run = run, .items = items, .n = n, .item_size = item_size, .fn = fn };
	pthread_t th[SCRUB_MAX_JOBS];
	unsigned started = 0, want = (unsigned)TESSERA_MIN((size_t)run->s->opt.jobs, n);

	atomic_init(&p.next, 0);
	for (unsigned i = 1; i < want; i++)
		if (pthread_create(&th[started], NULL, pool_main, &p) == 0)
			started++;
	pool_main(&p); /* the caller works too; with no thread started it does everything */
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
}

static uint8_t *worker_buf(struct worker *w, size_t size)
{
	if (w->buf_size < size) {
		uint8_t *b = realloc(w->buf, size);
		if (!b)
			return NULL;
		w->buf = b;
		w->buf_size = size;
	}
	return w->buf;
}

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

static void stripe_lost(struct run *run, uint64_t ino, uint64_t stripe, uint64_t len,
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

static void verify_stripe(struct run *run, struct worker *w, void *item)
{
	struct scrub *s = run->s;
	struct vitem *it = item;
	const struct meta_stripe *rec = &it->rec;
	const bool deep = s->opt.deep;
	struct blockclient_op ops[128];
	char keys[64][PROTO_KEY_MAX];
	int op_of[64][2];
	uint8_t hdrs[64][PROTO_FRAG_HDR_SIZE];
	uint64_t good = 0, bytes = 0;
	unsigned nops = 0, n;

	if (stripe_rec_check(rec, s->codec) < 0) {
		stripe_lost(run, it->ino, it->stripe, rec->data_len, true,
			    "stripe map record does not match the filesystem's geometry");
		goto done;
	}
	n = (unsigned)rec->k + rec->m;
	const size_t slot = PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len;
	uint8_t *buf = deep ? worker_buf(w, stripe_buf_size(rec)) : NULL;
	if (deep && !buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
	for (unsigned i = 0; i < n; i++) {
		op_of[i][0] = op_of[i][1] = -1;
		if (!(rec->present & (1ull << i))) {
			frag_event(s, SCRUB_EV_FRAG_MISSING, it, i, "never stored");
			continue;
		}
		if (server_pos(s, rec->servers[i]) < 0) {
			frag_event(s, SCRUB_EV_FRAG_MISSING, it, i, "its server left the list");
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
	if (nops)
		blockclient_run(s->bc, ops, nops, false);
	for (unsigned i = 0; i < n; i++) {
		if (op_of[i][0] < 0)
			continue;
		struct blockclient_op *a = &ops[op_of[i][0]];
		struct blockclient_op *b = op_of[i][1] >= 0 ? &ops[op_of[i][1]] : NULL;
		int r = a->result ? a->result : b ? b->result : 0;
		if (transport_error(r))
			mark_down(run, rec->servers[i]);
		if (r == -ENOENT) {
			frag_event(s, SCRUB_EV_FRAG_MISSING, it, i, "no such object");
			continue;
		}
		if (r == -EMSGSIZE || r == -ERANGE) {
			frag_event(s, SCRUB_EV_FRAG_CORRUPT, it, i, "wrong size");
			continue;
		}
		if (r < 0) {
			frag_event(s, SCRUB_EV_FRAG_UNREACHABLE, it, i, strerror(-r));
			continue;
		}
		if (deep) {
			bytes += a->result_len;
			if (!stripe_frag_check(s->sb->fs_uuid, stripe_slot(buf, rec, i),
					       a->result_len, true, it->ino, it->stripe, rec, i,
					       NULL)) {
				frag_event(s, SCRUB_EV_FRAG_CORRUPT, it, i,
					   a->result_len != slot ? "wrong size"
								 : "bad header or crc32c");
				continue;
			}
		} else {
			bytes += b->result_len;
			if (a->result_len != slot) {
				frag_event(s, SCRUB_EV_FRAG_CORRUPT, it, i, "wrong size");
				continue;
			}
			if (!stripe_frag_check(s->sb->fs_uuid, hdrs[i], b->result_len, false,
					       it->ino, it->stripe, rec, i, NULL)) {
				frag_event(s, SCRUB_EV_FRAG_CORRUPT, it, i, "bad header");
				continue;
			}
		}
		good |= 1ull << i;
	}
	uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
	pthread_mutex_lock(&s->lock);
	s->st.fragments += n;
	s->st.bytes_checked += bytes;
	if (good != all || (rec->flags & META_STRIPE_F_DEGRADED)) {
		if (run->n_dmg == run->cap_dmg) {
			size_t cap = run->cap_dmg ? run->cap_dmg * 2 : 256;
			struct dmg *d = realloc(run->dmg, cap * sizeof(*d));
			if (!d) {
				run->fatal = -ENOMEM;
				pthread_mutex_unlock(&s->lock);
				goto done;
			}
			run->dmg = d;
			run->cap_dmg = cap;
		}
		run->dmg[run->n_dmg++] = (struct dmg){ .ino = it->ino, .stripe = it->stripe,
						       .version = rec->version, .good = good,
						       .flags = rec->flags };
		s->st.stripes_damaged++;
	}
	pthread_mutex_unlock(&s->lock);
done:
	pthread_mutex_lock(&s->lock);
	s->st.stripes++;
	run->done++;
	uint64_t done = run->done, total = TESSERA_MAX(run->done, run->total_estimate);
	uint64_t nb = s->st.bytes_checked;
	pthread_mutex_unlock(&s->lock);
	scrub_progress(s, "verify", done, total, nb, false);
}

static void verify_flush(struct run *run)
{
	if (run->n_chunk == 0)
		return;
	pool_run(run, run->chunk, run->n_chunk, sizeof(struct vitem), verify_stripe);
	run->n_chunk = 0;
}

struct list_ctx {
	struct run *run;
	uint64_t ino;
};

static int verify_collect(void *ctx, uint64_t stripe, const struct meta_stripe *rec)
{
	struct list_ctx *l = ctx;
	struct run *run = l->run;

	run->chunk[run->n_chunk++] = (struct vitem){ .ino = l->ino, .stripe = stripe, .rec = *rec };
	if (run->n_chunk == SCRUB_CHUNK)
		verify_flush(run);
	return run->fatal;
}

static int phase_verify(struct run *run)
{
	struct scrub *s = run->s;
	uint64_t t0 = tclock_monotonic_ns();
	int r = 0;

	for (size_t i = 0; i < s->inodes_cap; i++) {
		struct scrub_inode *e = &s->inodes[i];
		if (!e->ino || e->removed || (e->mode & 0170000) != 0100000)
			continue;
		run->total_estimate += (e->size + s->sb->stripe_size - 1) / s->sb->stripe_size;
	}
	for (size_t i = 0; i < s->inodes_cap && r == 0; i++) {
		struct scrub_inode *e = &s->inodes[i];
		if (!e->ino || e->removed || (e->mode & 0170000) != 0100000)
			continue;
		struct list_ctx l = { .run = run, .ino = e->ino };
		r = meta_stripe_list(s->meta, e->ino, 0, verify_collect, &l);
	}
	if (r == 0)
		verify_flush(run);
	if (r == 0)
		r = run->fatal;
	scrub_progress(s, "verify", run->done, TESSERA_MAX(run->done, run->total_estimate),
		       s->st.bytes_checked, true);
	s->st.verify_ns = tclock_monotonic_ns() - t0;
	return r;
}

/* ---------------------------------------------------------------- repair */

/* Chooses a server for a fragment that must move: up, holding nothing of this stripe
 * (used[]), zone-limited to m fragments while possible (R4). Returns the id or -1. */
static int choose_target(struct run *run, uint64_t ino, uint64_t stripe, const uint16_t *used,
			 unsigned n_used)
{
	struct scrub *s = run->s;
	struct placement_server cand[META_MAX_SERVERS];
	uint16_t ranked[META_MAX_SERVERS];
	size_t nc = 0;

	for (size_t i = 0; i < s->n_servers; i++) {
		bool taken = false;
		for (unsigned j = 0; j < n_used; j++)
			taken |= used[j] == s->servers[i].id;
		if (taken || !server_healthy(run, s->servers[i].id))
			continue;
		cand[nc++] = s->servers[i];
	}
	if (nc == 0)
		return -1;
	int got = placement_choose(cand, nc, placement_seed(ino, stripe), (unsigned)nc, 0, ranked);
	if (got <= 0)
		return -1;
	for (int j = 0; j < got; j++) {
		int p = server_pos(s, ranked[j]);
		const char *zone = s->sb->servers[p].zone;
		unsigned in_zone = 0;
		if (!*zone)
			return ranked[j];
		for (unsigned u = 0; u < n_used; u++) {
			int q = server_pos(s, used[u]);
			if (q >= 0 && strcmp(s->sb->servers[q].zone, zone) == 0)
				in_zone++;
		}
		if (in_zone < s->m)
			return ranked[j];
	}
	return ranked[0];
}

static void repair_stripe(struct run *run, struct worker *w, void *item)
{
	struct scrub *s = run->s;
	struct dmg *d = item;
	struct meta_stripe rec, nrec;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	unsigned idx_of[64], nops, n;
	uint16_t used[64];
	unsigned n_used = 0;
	uint64_t fgood = 0, fbad = 0, rebuild, stored = 0, moved = 0, bytes = 0;
	struct proto_frag_hdr h;
	char msg[160];
	int r;

	r = meta_stripe_get(s->meta, d->ino, d->stripe, &rec);
	if (r == -ENOENT || (r == 0 && rec.version != d->version))
		goto done; /* rewritten or removed meanwhile: nothing left to repair */
	if (r < 0) {
		run->fatal = r;
		goto done;
	}
	n = (unsigned)rec.k + rec.m;
	uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
	uint8_t *buf = worker_buf(w, stripe_buf_size(&rec));
	if (!buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
	if (__builtin_popcountll(d->good) < (int)rec.k) {
		snprintf(msg, sizeof(msg), "only %d of %u fragments good, %u needed",
			 __builtin_popcountll(d->good), n, rec.k);
		stripe_lost(run, d->ino, d->stripe, rec.data_len, true, msg);
		goto done;
	}
	r = stripe_fetch(s->bc, s->codec, s->sb->fs_uuid, d->ino, d->stripe, &rec,
			 all & ~d->good, all, buf, &fgood, &fbad);
	if (r == -EIO) {
		snprintf(msg, sizeof(msg), "fewer than %u of %u fragments readable", rec.k, n);
		stripe_lost(run, d->ino, d->stripe, rec.data_len, true, msg);
		goto done;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot read the stripe: %s", strerror(-r));
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
		goto done;
	}
	pthread_mutex_lock(&s->lock);
	s->st.bytes_checked += (uint64_t)__builtin_popcountll(fgood | fbad) *
			       (PROTO_FRAG_HDR_SIZE + rec.frag_len);
	pthread_mutex_unlock(&s->lock);
	rebuild = (all & ~d->good) | fbad;
	/* The header's stripe length as the data path wrote it (truncation may since have
	 * shrunk data_len in the map, not in the fragments). */
	unsigned any = (unsigned)__builtin_ctzll(fgood);
	if (proto_frag_hdr_decode(stripe_slot(buf, &rec, any), PROTO_FRAG_HDR_SIZE, &h) < 0) {
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, "internal: bad header");
		goto done;
	}
	nrec = rec;
	for (unsigned i = 0; i < n; i++)
		if ((all & ~rebuild) & (1ull << i) && (rec.present & (1ull << i)))
			used[n_used++] = rec.servers[i];

	/* Seal every fragment to rebuild (R1). */
	for (unsigned i = 0; i < n; i++) {
		if (!(rebuild & (1ull << i)))
			continue;
		uint32_t crc = stripe_frag_seal(stripe_slot(buf, &rec, i), s->sb->fs_uuid, d->ino,
						d->stripe, rec.version, i, rec.k, rec.m,
						rec.frag_len, h.stripe_len);
		if ((rec.present & (1ull << i)) && crc != rec.crcs[i]) {
			snprintf(msg, sizeof(msg), "rebuilt fragment %u has crc32c %08x, the map says "
				 "%08x: not written", i, crc, rec.crcs[i]);
			stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
			goto done;
		}
		nrec.crcs[i] = crc;
	}

	/* Attempt 0: each fragment to its own server when healthy; attempt 1: moved (R2, R4). */
	uint64_t todo = rebuild;
	for (int attempt = 0; attempt < 2 && todo; attempt++) {
		uint16_t target[64];
		nops = 0;
		for (unsigned i = 0; i < n; i++) {
			if (!(todo & (1ull << i)))
				continue;
			int t = -1;
			uint16_t cur = rec.servers[i];
			bool cur_used = false;
			for (unsigned u = 0; u < n_used; u++)
				cur_used |= used[u] == cur;
			if (attempt == 0 && (rec.present & (1ull << i)) && !cur_used &&
			    server_healthy(run, cur))
				t = cur;
			else
				t = choose_target(run, d->ino, d->stripe, used, n_used);
			if (t < 0)
				continue;
			target[i] = (uint16_t)t;
			used[n_used++] = (uint16_t)t; /* reserved while the PUT runs */
			proto_frag_key(keys[nops], sizeof(keys[nops]), s->sb->fs_uuid, d->ino,
				       d->stripe, rec.version, i);
			ops[nops] = (struct blockclient_op){
				.method = BC_PUT, .server = (uint16_t)t, .key = keys[nops],
				.body = stripe_slot(buf, &rec, i),
				.body_len = PROTO_FRAG_HDR_SIZE + (size_t)rec.frag_len };
			idx_of[nops++] = i;
		}
		if (nops == 0)
			break;
		if (s->opt.dry_run)
			break;
		blockclient_run(s->bc, ops, nops, false);
		for (unsigned j = 0; j < nops; j++) {
			unsigned i = idx_of[j] & 63; /* < n <= 64 */
			if (ops[j].result != 0) {
				if (transport_error(ops[j].result) || ops[j].result == -ENOSPC)
					mark_down(run, ops[j].server);
				/* release the reservation */
				for (unsigned u = 0; u < n_used; u++) {
					if (used[u] == ops[j].server) {
						used[u] = used[--n_used];
						break;
					}
				}
				continue;
			}
			todo &= ~(1ull << i);
			stored |= 1ull << i;
			if (!(rec.present & (1ull << i)) || target[i] != rec.servers[i])
				moved |= 1ull << i;
			nrec.servers[i] = target[i];
			nrec.present |= 1ull << i;
			bytes += PROTO_FRAG_HDR_SIZE + (size_t)rec.frag_len;
			snprintf(msg, sizeof(msg), "%s server %u",
				 moved & (1ull << i) ? "moved to" : "rewritten on", target[i]);
			scrub_event(s, &(struct scrub_event){
				.kind = SCRUB_EV_FRAG_REBUILT, .fixed = true, .ino = d->ino,
				.stripe = d->stripe, .index = (int)i, .server = target[i],
				.off = d->stripe * s->sb->stripe_size, .len = rec.data_len,
				.key = ops[j].key, .msg = msg });
		}
	}
	if (nrec.present == all)
		nrec.flags &= ~META_STRIPE_F_DEGRADED;
	pthread_mutex_lock(&s->lock);
	s->st.frags_rebuilt += (uint64_t)__builtin_popcountll(stored);
	s->st.frags_moved += (uint64_t)__builtin_popcountll(moved);
	s->st.bytes_rebuilt += bytes;
	if (stored || nrec.flags != rec.flags)
		run->pending[run->n_pending++] = (struct vitem){ .ino = d->ino, .stripe = d->stripe,
								  .rec = nrec };
	if (!todo)
		s->st.stripes_repaired++;
	pthread_mutex_unlock(&s->lock);
	if (todo) {
		snprintf(msg, sizeof(msg), "%d fragment(s) could not be stored (no healthy server "
			 "free for them)", __builtin_popcountll(todo));
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
	}
done:
	pthread_mutex_lock(&s->lock);
	run->done++;
	uint64_t done = run->done, nb = s->st.bytes_rebuilt;
	pthread_mutex_unlock(&s->lock);
	scrub_progress(s, "repair", done, run->n_dmg, nb, false);
}

/* Commits the pending stripe-map updates of a chunk in one synced batch. */
static int repair_commit(struct run *run)
{
	struct scrub *s = run->s;
	struct meta_batch *b;
	int r;

	if (run->n_pending == 0)
		return 0;
	b = meta_batch_new(s->meta);
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < run->n_pending; i++)
		meta_batch_stripe_put(b, run->pending[i].ino, run->pending[i].stripe,
				      &run->pending[i].rec);
	r = meta_commit(s->meta, b, true);
	meta_batch_free(b);
	if (r < 0)
		scrub_warn(s, "cannot commit %zu repaired stripe maps: %s", run->n_pending,
			   strerror(-r));
	run->n_pending = 0;
	return r;
}

static int dmg_cmp(const void *a, const void *b)
{
	const struct dmg *x = a, *y = b;
	int gx = __builtin_popcountll(x->good), gy = __builtin_popcountll(y->good);

	if (gx != gy)
		return gx < gy ? -1 : 1;
	bool dx = x->flags & META_STRIPE_F_DEGRADED, dy = y->flags & META_STRIPE_F_DEGRADED;
	if (dx != dy)
		return dx ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->stripe < y->stripe ? -1 : x->stripe > y->stripe;
}

static int phase_repair(struct run *run)
{
	struct scrub *s = run->s;
	uint64_t t0 = tclock_monotonic_ns();
	int r = 0;

	if (run->n_dmg)
		qsort(run->dmg, run->n_dmg, sizeof(*run->dmg), dmg_cmp);
	if (s->opt.dry_run) {
		/* Report what a repair would find lost, count the rest as left. */
		for (size_t i = 0; i < run->n_dmg; i++) {
			struct dmg *d = &run->dmg[i];
			struct meta_stripe rec;
			if (meta_stripe_get(s->meta, d->ino, d->stripe, &rec) < 0)
				continue;
			if (__builtin_popcountll(d->good) < (int)rec.k) {
				char msg[96];
				snprintf(msg, sizeof(msg), "only %d of %u fragments good, %u needed",
					 __builtin_popcountll(d->good), rec.k + rec.m, rec.k);
				stripe_lost(run, d->ino, d->stripe, rec.data_len, true, msg);
			} else {
				pthread_mutex_lock(&s->lock);
				s->st.errors_left++;
				pthread_mutex_unlock(&s->lock);
			}
		}
		return 0;
	}
	run->pending = calloc(SCRUB_CHUNK, sizeof(*run->pending));
	if (!run->pending)
		return -ENOMEM;
	run->done = 0;
	for (size_t i = 0; i < run->n_dmg && r == 0; i += SCRUB_CHUNK) {
		size_t cnt = TESSERA_MIN((size_t)SCRUB_CHUNK, run->n_dmg - i);
		pool_run(run, run->dmg + i, cnt, sizeof(struct dmg), repair_stripe);
		r = repair_commit(run);
		if (r == 0)
			r = run->fatal;
	}
	scrub_progress(s, "repair", run->done, run->n_dmg, s->st.bytes_rebuilt, true);
	pthread_mutex_lock(&s->lock);
	s->st.errors_fixed += s->st.stripes_repaired;
	pthread_mutex_unlock(&s->lock);
	s->st.repair_ns = tclock_monotonic_ns() - t0;
	return r;
}

/* ---------------------------------------------------------------- run */

int scrub_run(struct scrub *s, struct scrub_stats *ret_stats)
{
	struct run *run = calloc(1, sizeof(*run));
	uint64_t t0 = tclock_monotonic_ns();
	int r;

	if (!run)
		return -ENOMEM;
	run->s = s;
	run->chunk = calloc(SCRUB_CHUNK, sizeof(*run->chunk));
	if (!run->chunk) {
		r = -ENOMEM;
		goto out;
	}
	probe_servers(run);
	r = scrub_namespace(s);
	if (r < 0)
		goto out;
	r = phase_verify(run);
	if (r < 0)
		goto out;
	r = phase_repair(run);
	if (r < 0)
		goto out;
	if (s->opt.gc)
		r = scrub_gc(s);
	if (r == 0 && !s->opt.dry_run)
		r = meta_sync(s->meta);
out:
	s->st.total_ns = tclock_monotonic_ns() - t0;
	*ret_stats = s->st;
	free(run->chunk);
	free(run->pending);
	free(run->dmg);
	free(run);
	return r;
}

int scrub_exit_status(const struct scrub_stats *st, int run_result)
{
	int rc = 0;

	if (st->errors_fixed)
		rc |= SCRUB_EXIT_FIXED;
	if (st->errors_left)
		rc |= SCRUB_EXIT_LEFT;
	if (run_result < 0)
		rc |= SCRUB_EXIT_OPERATIONAL;
	return rc;
}
