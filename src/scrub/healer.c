/*
 * scrub/healer: the daemon's background repair, built on the scrubber.
 *
 * The data path flags a stripe degraded in its record (META_STRIPE_F_DEGRADED, so the flag
 * survives a restart) when it stores it with fewer than k+m fragments or when a read finds a
 * fragment missing or corrupt. The healer runs passes of the mounted scrubber restricted to
 * those stripes (scrub_options.flagged_only, no namespace fixes, no garbage collection): each
 * is verified, rebuilt most at risk first, and committed with the scrubber's compare-and-set
 * under the daemon's inode lock (R6), which clears the flag once every fragment is back; a
 * stripe it cannot rebuild yet (its server still down, no other server free) keeps its flag.
 *
 * When: at start (flags left by an earlier run), within a poll interval of a server turning
 * up again (what it missed can now be rebuilt on it), after the data path flagged more
 * stripes (the generation counter changed) but at most every HEAL_MIN_GAP_S, and every
 * HEAL_RETRY_S while the last pass left stripes unrepaired. A pass's fragment traffic is
 * rate-limited by the scrubber's token bucket.
 *
 * Threads: one (heal_main). h->lock protects stop, the running scrub (so that
 * scrub_healer_stop() can cancel it) and the status.
 */
#include "scrub_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

#define HEAL_MIN_GAP_S 5   /* passes for new flags at most this often */
#define HEAL_RETRY_S 60    /* a pass that left damage is retried after this, at the latest */

struct scrub_healer {
	struct scrub_healer_config cfg;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;   /* CLOCK_MONOTONIC */
	bool stop;
	struct scrub *running;
	struct scrub_healer_status st;
};

/* Whether a server of the list turned up since the last look; up[] keeps the last states. */
static bool server_returned(struct scrub_healer *h, bool *up)
{
	const struct meta_superblock *sb = meta_superblock(h->cfg.meta);
	bool returned = false;

	for (uint32_t i = 0; i < sb->n_servers && i < META_MAX_SERVERS; i++) {
		bool now = blockstore_server_up(h->cfg.bs, sb->servers[i].id);
		if (now && !up[i])
			returned = true;
		up[i] = now;
	}
	return returned;
}

static void heal_pass(struct scrub_healer *h, const char *why)
{
	struct scrub_options opt = {
		.flagged_only = true, .skip_namespace = true, .jobs = h->cfg.jobs,
		.rate_limit = h->cfg.rate_limit, .meta_lock = h->cfg.meta_lock,
		.in_use = h->cfg.in_use, .in_use_ctx = h->cfg.in_use_ctx,
	};
	struct scrub_stats st;
	struct scrub *s = NULL;
	int r = scrub_new(h->cfg.meta, h->cfg.bs, &opt, &s);

	if (r < 0) {
		tlog_warn("healer: cannot start a pass: %s", strerror(-r));
		return;
	}
	pthread_mutex_lock(&h->lock);
	if (h->stop) {
		pthread_mutex_unlock(&h->lock);
		scrub_free(s);
		return;
	}
	h->running = s;
	h->st.running = true;
	pthread_mutex_unlock(&h->lock);

	uint64_t t0 = tclock_monotonic_ns();
	memset(&st, 0, sizeof(st));
	r = scrub_run(s, &st);
	double secs = (double)(tclock_monotonic_ns() - t0) / 1e9;

	pthread_mutex_lock(&h->lock);
	h->running = NULL;
	h->st.running = false;
	h->st.passes++;
	h->st.last_pass_s = (int64_t)time(NULL);
	h->st.frags_rebuilt += st.frags_rebuilt;
	h->st.stripes_left = st.errors_left;
	pthread_mutex_unlock(&h->lock);
	scrub_free(s);

	if (r < 0 && r != -ECANCELED)
		tlog_warn("healer: the pass (%s) failed: %s", why, strerror(-r));
	else if (st.stripes_damaged || st.frags_rebuilt)
		tlog_warn("healer: %" PRIu64 " degraded stripes (%s): %" PRIu64 " fragments rebuilt, "
			  "%" PRIu64 " stripes left for later, %" PRIu64 " lost, in %.1f s",
			  st.stripes_damaged, why, st.frags_rebuilt, st.errors_left,
			  st.stripes_lost, secs);
	else
		tlog_debug("healer: nothing to repair (%s)", why);
}

static void *heal_main(void *arg)
{
	struct scrub_healer *h = arg;
	bool up[META_MAX_SERVERS];
	uint64_t gen_seen = h->cfg.work_gen ? h->cfg.work_gen(h->cfg.gen_ctx) : 0;
	uint64_t last_ns = 0;
	const char *why = "at start";

	pthread_setname_np(pthread_self(), "tessera-heal");
	for (size_t i = 0; i < META_MAX_SERVERS; i++)
		up[i] = true;
	for (;;) {
		if (why) {
			uint64_t gen = h->cfg.work_gen ? h->cfg.work_gen(h->cfg.gen_ctx) : 0;
			heal_pass(h, why);
			gen_seen = gen; /* flags raised during the pass bring another one */
			last_ns = tclock_monotonic_ns();
		}
		pthread_mutex_lock(&h->lock);
		if (!h->stop)
			tcond_wait_until(&h->cond, &h->lock, tclock_monotonic_ns() +
					 (uint64_t)h->cfg.interval_ms * 1000000ull);
		bool stop = h->stop;
		uint64_t left = h->st.stripes_left;
		pthread_mutex_unlock(&h->lock);
		if (stop)
			break;
		uint64_t now = tclock_monotonic_ns(), since = (now - last_ns) / 1000000000ull;
		uint64_t gen = h->cfg.work_gen ? h->cfg.work_gen(h->cfg.gen_ctx) : 0;
		why = NULL;
		if (server_returned(h, up))
			why = "a server answers again";
		else if (gen != gen_seen && since >= HEAL_MIN_GAP_S)
			why = "stripes flagged degraded";
		else if (left && since >= HEAL_RETRY_S)
			why = "retry of what was left";
	}
	return NULL;
}

int scrub_healer_start(const struct scrub_healer_config *cfg, struct scrub_healer **ret)
{
	struct scrub_healer *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	h->cfg = *cfg;
	if (!h->cfg.interval_ms)
		h->cfg.interval_ms = 1000;
	if (!h->cfg.jobs)
		h->cfg.jobs = 4;
	pthread_mutex_init(&h->lock, NULL);
	tcond_init_monotonic(&h->cond);
	r = pthread_create(&h->thread, NULL, heal_main, h);
	if (r != 0) {
		pthread_cond_destroy(&h->cond);
		pthread_mutex_destroy(&h->lock);
		free(h);
		return -r;
	}
	*ret = h;
	return 0;
}

void scrub_healer_stop(struct scrub_healer *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	if (h->running)
		scrub_cancel(h->running); /* what it rebuilt so far is committed */
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void scrub_healer_status(struct scrub_healer *h, struct scrub_healer_status *ret)
{
	pthread_mutex_lock(&h->lock);
	*ret = h->st;
	pthread_mutex_unlock(&h->lock);
}
