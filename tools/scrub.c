/*
 * tessera-scrub (also fsck.tesserafs): verifies and repairs a tesserafs filesystem.
 *
 *   tessera-scrub [options] META_DIR|MOUNTPOINT
 *
 * Unmounted: opens the metadata itself, connects to the block servers with the superblock's
 * credentials and runs the scrub engine (include/tessera/scrub.h, doc/scrub.md). Mounted (the
 * argument is a tesserafs mount point, or a metadata directory that a daemon holds): asks the
 * daemon to run the engine through its control socket (include/tessera/control.h) and shows
 * what it streams back, since RocksDB allows one writer. Either way the checkpoint of an
 * interrupted run is META_DIR/scrub.checkpoint. Output: findings and a summary on stdout (or
 * one JSON document with --json), progress on stderr when it is a terminal.
 * Exit status as fsck(8): 0 clean, 1 errors corrected, 4 errors left, 8 operational error,
 * 16 usage error (sums when several apply).
 * Single-threaded apart from the engine's workers, whose callbacks are serialised by it.
 * SIGINT/SIGTERM stop the run after the stripes in flight (exit 8; the next run resumes).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/control.h"
#include "tessera/meta.h"
#include "tessera/scrub.h"
#include "tessera/stripe.h"

#include "cli.h"

static const char *prog = "tessera-scrub";

#define JSON_MAX_ITEMS 10000
#define JSON_ITEM_MAX (64u << 10) /* bytes of one event object (paths are at most 4 KiB) */

struct out {
	bool json, verbose, quiet, progress;
	FILE *f;
	/* JSON: findings as ready-made objects */
	char **items;
	size_t n_items, cap_items, dropped;
	bool progress_shown;
	uint64_t phase_t0;
	char phase[16];
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [options] META_DIR|MOUNTPOINT\n"
		"Verify every fragment of a tesserafs filesystem and rebuild what is damaged.\n"
		"A mounted filesystem is scrubbed by its daemon, through its control socket.\n"
		"\n"
		"  -n, --dry-run         report only, change nothing\n"
		"  -y, -p, -a            repair (the default; accepted for fsck compatibility)\n"
		"      --deep            read every fragment whole and check its crc32c\n"
		"      --gc              also delete unreferenced fragments and drain the garbage queue\n"
		"      --gc-grace SECS   keep unreferenced fragments younger than this (default 3600)\n"
		"      --no-namespace    skip the namespace check\n"
		"  -j, --jobs N          stripes in flight (default 8)\n"
		"      --rate-limit SIZE fragment bytes read and written per second (e.g. 50M)\n"
		"      --restart         ignore the checkpoint of an interrupted run\n"
		"      --window N        stripes per round (repair and checkpoint after each;\n"
		"                        default %d)\n"
		"      --request-timeout SECS   per block-server request (default 30)\n"
		"      --json            print one JSON report on stdout\n"
		"  -v, --verbose         list every damaged fragment and every rebuild\n"
		"  -q, --quiet           print only problems left\n"
		"  -h, --help            this text\n"
		"  -V, --version         the version\n"
		"\n"
		"Exit status (fsck(8)): 0 clean, 1 errors corrected, 4 errors left uncorrected,\n"
		"8 operational error, 16 usage error.\n",
		prog, SCRUB_WINDOW_DEFAULT);
}

static const struct cli_style style = { "tessera-scrub", "", "", SCRUB_EXIT_USAGE,
				     SCRUB_EXIT_OPERATIONAL };
#define usage_error(...) cli_usage_error(&style, __VA_ARGS__)

static const char *kind_name(enum scrub_event_kind k)
{
	switch (k) {
	case SCRUB_EV_FRAG_MISSING: return "fragment_missing";
	case SCRUB_EV_FRAG_UNREACHABLE: return "fragment_unreachable";
	case SCRUB_EV_FRAG_CORRUPT: return "fragment_corrupt";
	case SCRUB_EV_FRAG_REBUILT: return "fragment_rebuilt";
	case SCRUB_EV_STRIPE_LOST: return "stripe_lost";
	case SCRUB_EV_STRIPE_FAILED: return "stripe_repair_failed";
	case SCRUB_EV_NAMESPACE: return "namespace";
	case SCRUB_EV_GC_ORPHAN: return "gc_orphan";
	case SCRUB_EV_WARNING: return "warning";
	case SCRUB_EV_NOTICE: return "notice";
	}
	return "unknown";
}

/* ---------------------------------------------------------------- callbacks */

static void progress_clear(struct out *o)
{
	if (o->progress_shown) {
		fprintf(stderr, "\r\033[K");
		o->progress_shown = false;
	}
}

static void on_event(void *ctx, const struct scrub_event *ev)
{
	struct out *o = ctx;

	if (o->json) {
		struct tstr b;

		if (o->n_items >= JSON_MAX_ITEMS) {
			o->dropped++;
			return;
		}
		tstr_init(&b, JSON_ITEM_MAX);
		tstr_printf(&b, "{\"kind\":\"%s\",\"fixed\":%s", kind_name(ev->kind),
			  ev->fixed ? "true" : "false");
		if (ev->ino)
			tstr_printf(&b, ",\"ino\":%" PRIu64, ev->ino);
		if (ev->kind <= SCRUB_EV_STRIPE_FAILED)
			tstr_printf(&b, ",\"stripe\":%" PRIu64 ",\"offset\":%" PRIu64
				      ",\"length\":%" PRIu64, ev->stripe, ev->off, ev->len);
		if (ev->index >= 0)
			tstr_printf(&b, ",\"fragment\":%d", ev->index);
		if (ev->server >= 0)
			tstr_printf(&b, ",\"server\":%d", ev->server);
		if (ev->path) {
			tstr_puts(&b, ",\"path\":");
			tstr_json_str(&b, ev->path);
		}
		if (ev->key) {
			tstr_puts(&b, ",\"key\":");
			tstr_json_str(&b, ev->key);
		}
		tstr_puts(&b, ",\"message\":");
		tstr_json_str(&b, ev->msg);
		tstr_puts(&b, "}");
		if (b.failed) {
			tstr_free(&b);
			return;
		}
		if (o->n_items == o->cap_items) {
			size_t cap = o->cap_items ? o->cap_items * 2 : 64;
			char **q = realloc(o->items, cap * sizeof(*q));
			if (!q) {
				tstr_free(&b);
				return;
			}
			o->items = q;
			o->cap_items = cap;
		}
		o->items[o->n_items++] = b.buf; /* owned by items now */
		return;
	}
	bool frag = ev->kind <= SCRUB_EV_FRAG_REBUILT;
	if (frag && !o->verbose)
		return;
	if (o->quiet && (ev->fixed || ev->kind == SCRUB_EV_WARNING || ev->kind == SCRUB_EV_GC_ORPHAN ||
			 ev->kind == SCRUB_EV_NOTICE))
		return;
	progress_clear(o);
	switch (ev->kind) {
	case SCRUB_EV_STRIPE_LOST:
	case SCRUB_EV_STRIPE_FAILED:
		fprintf(o->f, "%s: %s, bytes %" PRIu64 "-%" PRIu64 " (inode %" PRIu64 " stripe %"
			PRIu64 "): %s\n",
			ev->kind == SCRUB_EV_STRIPE_LOST ? "UNRECOVERABLE" : "NOT REPAIRED",
			ev->path ? ev->path : "(no path)", ev->off,
			ev->off + (ev->len ? ev->len - 1 : 0), ev->ino, ev->stripe, ev->msg);
		break;
	case SCRUB_EV_NAMESPACE:
		fprintf(o->f, "namespace: %s%s%s\n", ev->path ? ev->path : "",
			ev->path ? ": " : "", ev->msg);
		break;
	case SCRUB_EV_GC_ORPHAN:
		fprintf(o->f, "gc: server %d: %s: %s\n", ev->server, ev->key, ev->msg);
		break;
	case SCRUB_EV_WARNING:
		fprintf(stderr, "%s: warning: %s\n", prog, ev->msg);
		break;
	case SCRUB_EV_NOTICE:
		fprintf(stderr, "%s: %s\n", prog, ev->msg);
		break;
	default:
		fprintf(o->f, "%s: inode %" PRIu64 " stripe %" PRIu64 " fragment %d server %d: %s\n",
			kind_name(ev->kind), ev->ino, ev->stripe, ev->index, ev->server, ev->msg);
		break;
	}
}

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total,
			uint64_t bytes)
{
	struct out *o = ctx;
	uint64_t now = tclock_monotonic_ns();
	char b[32], rate[32], eta[32] = "";

	if (!o->progress)
		return;
	if (strcmp(o->phase, phase) != 0) {
		snprintf(o->phase, sizeof(o->phase), "%s", phase);
		o->phase_t0 = now;
	}
	double secs = (double)(now - o->phase_t0) / 1e9;
	tformat_bytes(bytes, b, sizeof(b));
	tformat_bytes(secs > 0.05 ? (uint64_t)((double)bytes / secs) : 0, rate, sizeof(rate));
	if (total > done && done > 0 && secs > 1) {
		uint64_t left = (uint64_t)(secs * (double)(total - done) / (double)done);
		snprintf(eta, sizeof(eta), ", ETA %" PRIu64 ":%02" PRIu64, left / 60, left % 60);
	}
	if (total)
		fprintf(stderr, "\r\033[K%s: %" PRIu64 "/%" PRIu64 ", %s, %s/s%s", phase, done, total,
			b, rate, eta);
	else
		fprintf(stderr, "\r\033[K%s: %" PRIu64 ", %s", phase, done, b);
	o->progress_shown = true;
}

/* ---------------------------------------------------------------- report */

static void print_json(struct out *o, const char *uuid, const struct scrub_stats *st, int rc,
		       const struct scrub_options *opt, bool mounted)
{
	printf("{\"filesystem\":\"%s\",\"mode\":{\"repair\":%s,\"deep\":%s,\"gc\":%s,"
	       "\"mounted\":%s},\"exit_status\":%d,\"stats\":{", uuid,
	       opt->dry_run ? "false" : "true", opt->deep ? "true" : "false",
	       opt->gc ? "true" : "false", mounted ? "true" : "false", rc);
	const char *sep = "";
#define X(f) printf("%s\"" #f "\":%" PRIu64, sep, st->f), sep = ",";
	SCRUB_STATS_FIELDS(X)
#undef X
	printf("},\"findings\":[");
	for (size_t i = 0; i < o->n_items; i++)
		printf("%s%s", i ? "," : "", o->items[i]);
	printf("],\"findings_dropped\":%zu}\n", o->dropped);
}

static void print_summary(const struct scrub_stats *st, bool dry_run, bool gc)
{
	char b1[32], b2[32];

	tformat_bytes(st->bytes_checked, b1, sizeof(b1));
	tformat_bytes(st->bytes_rebuilt, b2, sizeof(b2));
	printf("%" PRIu64 " inodes (%" PRIu64 " files, %" PRIu64 " directories), %" PRIu64
	       " stripes, %" PRIu64 " fragments, %s read\n", st->inodes, st->files, st->dirs,
	       st->stripes, st->fragments, b1);
	printf("fragments: %" PRIu64 " missing, %" PRIu64 " unreachable, %" PRIu64 " corrupt; %"
	       PRIu64 " rebuilt (%" PRIu64 " moved), %s written\n", st->frags_missing,
	       st->frags_unreachable, st->frags_corrupt, st->frags_rebuilt, st->frags_moved, b2);
	printf("stripes: %" PRIu64 " damaged, %" PRIu64 " repaired, %" PRIu64 " unrecoverable, %"
	       PRIu64 " not repaired\n", st->stripes_damaged, st->stripes_repaired,
	       st->stripes_lost, st->stripes_failed);
	printf("namespace: %" PRIu64 " problems, %" PRIu64 " fixed\n", st->ns_errors, st->ns_fixed);
	if (st->stripes_changed)
		printf("%" PRIu64 " stripes were rewritten by the filesystem while being checked\n",
		       st->stripes_changed);
	if (st->resumed)
		printf("(resumed from the checkpoint of an interrupted run: the counts include it)\n");
	if (gc)
		printf("gc: %" PRIu64 " queued fragments deleted; %" PRIu64 " objects listed, %" PRIu64
		       " unreferenced, %" PRIu64 " deleted, %" PRIu64 " within the grace period\n",
		       st->garbage_drained, st->gc_listed, st->gc_orphans, st->gc_deleted,
		       st->gc_young);
	if (st->repair_ns && st->bytes_rebuilt) {
		tformat_bytes((uint64_t)((double)st->bytes_rebuilt * 1e9 / (double)st->repair_ns), b2,
			    sizeof(b2));
		printf("rebuild rate: %s/s\n", b2);
	}
	if (dry_run && st->errors_left)
		printf("%" PRIu64 " problems found (dry run: nothing changed)\n", st->errors_left);
}

/* After a complete run that left nothing to repair, every stripe has its fragments on the
 * servers its map names, replaced ones included: their refill is done (META_SERVER_F_REFILL,
 * which holds back the next `tessera server remove` or `replace`). */
static void clear_refill(struct meta *meta, const struct out *o)
{
	struct meta_superblock *sb = malloc(sizeof(*sb));
	bool any = false;
	int r;

	if (!sb)
		return;
	memcpy(sb, meta_superblock(meta), sizeof(*sb));
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		if (!(sb->servers[i].flags & META_SERVER_F_REFILL))
			continue;
		sb->servers[i].flags &= ~META_SERVER_F_REFILL;
		any = true;
		if (!o->json && !o->quiet)
			printf("server %u (%s) is refilled\n", sb->servers[i].id, sb->servers[i].url);
	}
	if (any && (r = meta_superblock_update(meta, sb)) < 0)
		fprintf(stderr, "%s: cannot record the refilled servers: %s\n", prog, strerror(-r));
	free(sb);
}

static volatile sig_atomic_t stop_requested;
static struct scrub *volatile running; /* the unmounted run, for the signal handler */

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
	if (running)
		scrub_cancel(running);
	signal(SIGINT, SIG_DFL); /* a second ^C ends the process at once */
	signal(SIGTERM, SIG_DFL);
}

static void report(struct out *o, const char *uuid, const struct scrub_options *opt,
		   const struct scrub_stats *st, int rc, int r, bool mounted)
{
	progress_clear(o);
	if (r == -ECANCELED)
		fprintf(stderr, "%s: interrupted; run it again to resume from the checkpoint\n",
			prog);
	else if (r < 0)
		fprintf(stderr, "%s: scrub stopped: %s\n", prog, strerror(-r));
	if (o->json)
		print_json(o, uuid, st, rc, opt, mounted);
	else if (!o->quiet || rc)
		print_summary(st, opt->dry_run, opt->gc);
}

/* Mounted mode: the daemon that holds meta_dir runs the scrub. */
static int run_mounted(const char *meta_dir, const char *shown, struct scrub_options *opt,
		       struct out *o)
{
	struct control_conn *c = NULL;
	struct control_info info;
	struct scrub_stats st = { 0 };
	int r, result = 0, rc;

	r = control_connect(meta_dir, &c);
	if (r < 0) {
		fprintf(stderr, "%s: '%s' is in use (mounted?) but its daemon's control socket "
			"'%s/%s' does not answer: %s\n", prog, shown, meta_dir, CONTROL_SOCKET_NAME,
			strerror(-r));
		return SCRUB_EXIT_OPERATIONAL;
	}
	r = control_scrub_start(c, opt, &info);
	if (r < 0) {
		fprintf(stderr, "%s: the daemon of '%s' refused the scrub: %s\n", prog, shown,
			r == -EBUSY ? "a scrub is already running" : strerror(-r));
		control_close(c);
		return SCRUB_EXIT_OPERATIONAL;
	}
	if (!o->json && !o->quiet)
		printf("%s: filesystem %s (k=%u m=%u, %u servers), mounted: scrubbed by its "
		       "daemon%s%s%s\n", prog, info.fs_uuid, info.k, info.m, info.n_servers,
		       opt->dry_run ? ", dry run" : "", opt->deep ? ", deep" : "",
		       opt->gc ? ", gc" : "");
	fflush(stdout);
	r = control_scrub_wait(c, opt, &stop_requested, &st, &result);
	control_close(c); /* closing it cancels a scrub still running in the daemon */
	if (r == -ECANCELED) {
		result = r;
	} else if (r < 0) {
		progress_clear(o);
		fprintf(stderr, "%s: lost the daemon of '%s': %s\n", prog, shown, strerror(-r));
		return SCRUB_EXIT_OPERATIONAL;
	}
	rc = scrub_exit_status(&st, result);
	report(o, info.fs_uuid, opt, &st, rc, result, true);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_DEEP = 256, O_GC, O_GRACE, O_JSON, O_NONS, O_TIMEOUT, O_RATE, O_RESTART,
	       O_WINDOW };
	static const struct option longopts[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "deep", no_argument, NULL, O_DEEP },
		{ "gc", no_argument, NULL, O_GC },
		{ "gc-grace", required_argument, NULL, O_GRACE },
		{ "no-namespace", no_argument, NULL, O_NONS },
		{ "jobs", required_argument, NULL, 'j' },
		{ "request-timeout", required_argument, NULL, O_TIMEOUT },
		{ "rate-limit", required_argument, NULL, O_RATE },
		{ "restart", no_argument, NULL, O_RESTART },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "json", no_argument, NULL, O_JSON },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct scrub_options opt = { 0 };
	struct out o = { .f = stdout };
	struct blockclient_config cfg;
	struct blockstore *bs = NULL;
	struct meta *meta = NULL;
	struct scrub *s = NULL;
	struct scrub_stats st = { 0 };
	uint64_t timeout_s = 30, num;
	int c, r, rc = SCRUB_EXIT_OPERATIONAL;

	tlog_set_ident(prog);
	memset(&cfg, 0, sizeof(cfg));
	while ((c = getopt_long(argc, argv, "nypaj:vqhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			opt.dry_run = true;
			break;
		case 'y':
		case 'p':
		case 'a':
			break;
		case O_DEEP:
			opt.deep = true;
			break;
		case O_GC:
			opt.gc = true;
			break;
		case O_GRACE:
			if (tparse_uint(optarg, 0, UINT32_MAX, &num) < 0)
				return usage_error("bad --gc-grace '%s' (seconds, 0..%u)", optarg,
						   UINT32_MAX);
			opt.gc_grace_s = num;
			opt.gc_grace_set = true;
			break;
		case O_NONS:
			opt.skip_namespace = true;
			break;
		case 'j':
			if (tparse_uint(optarg, 1, SCRUB_MAX_JOBS, &num) < 0)
				return usage_error("bad --jobs '%s' (1..%d)", optarg, SCRUB_MAX_JOBS);
			opt.jobs = (unsigned)num;
			break;
		case O_TIMEOUT:
			if (tparse_uint(optarg, 1, 3600, &timeout_s) < 0)
				return usage_error("bad --request-timeout '%s' (1..3600 s)", optarg);
			break;
		case O_RATE:
			if (tparse_size(optarg, &opt.rate_limit) < 0 || opt.rate_limit == 0)
				return usage_error("bad --rate-limit '%s' (bytes per second, e.g. 50M)",
						   optarg);
			break;
		case O_RESTART:
			opt.no_resume = true;
			break;
		case O_WINDOW:
			if (tparse_uint(optarg, 1, UINT64_MAX, &num) < 0)
				return usage_error("bad --window '%s' (stripes, at least 1)", optarg);
			opt.window = num;
			break;
		case O_JSON:
			o.json = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", prog, TESSERA_VERSION);
			return 0;
		default:
			usage(stderr);
			return SCRUB_EXIT_USAGE;
		}
	}
	if (optind != argc - 1)
		return usage_error(optind >= argc ? "missing META_DIR or MOUNTPOINT"
						  : "too many arguments");
	const char *arg = argv[optind];
	struct stat sbuf;
	if (stat(arg, &sbuf) < 0 || !S_ISDIR(sbuf.st_mode))
		return usage_error("'%s' is not a directory", arg);

	o.progress = isatty(STDERR_FILENO) && !o.quiet;
	opt.on_event = on_event;
	opt.on_progress = on_progress;
	opt.ctx = &o;
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	char dir[PATH_MAX];
	if (control_mount_source(arg, dir, sizeof(dir))) {
		rc = run_mounted(dir, arg, &opt, &o);
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s", arg);
	r = meta_open(dir, &meta);
	if (r == -EBUSY) {
		rc = run_mounted(dir, dir, &opt, &o); /* a daemon holds it */
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "%s: cannot open metadata '%s': %s\n", prog, dir,
			r == -ENOENT ? "no tesserafs filesystem there" : strerror(-r));
		return SCRUB_EXIT_OPERATIONAL;
	}
	const struct meta_superblock *sb = meta_superblock(meta);
	char uuid[37];
	tuuid_format(sb->fs_uuid, uuid);
	r = stripe_client_config(dir, sb, &cfg);
	if (r < 0) {
		fprintf(stderr, "%s: no usable access key (credentials '%s'): %s\n", prog,
			sb->credentials, strerror(-r));
		goto out;
	}
	cfg.request_timeout_ms = (unsigned)timeout_s * 1000;
	r = stripe_store_new(sb, &cfg, &bs);
	if (r < 0) {
		fprintf(stderr, "%s: cannot set up the block client: %s\n", prog, strerror(-r));
		goto out;
	}
	char ckpt[PATH_MAX];
	if (snprintf(ckpt, sizeof(ckpt), "%s/%s", dir, SCRUB_CHECKPOINT_NAME) < (int)sizeof(ckpt))
		opt.checkpoint = ckpt;
	r = scrub_new(meta, bs, &opt, &s);
	if (r < 0) {
		fprintf(stderr, "%s: cannot start: %s\n", prog, strerror(-r));
		goto out;
	}
	if (!o.json && !o.quiet)
		printf("%s: filesystem %s (k=%u m=%u, %u servers)%s%s%s\n", prog, uuid, sb->k, sb->m,
		       sb->n_servers, opt.dry_run ? ", dry run" : "", opt.deep ? ", deep" : "",
		       opt.gc ? ", gc" : "");
	running = s;
	if (stop_requested)
		scrub_cancel(s);
	r = scrub_run(s, &st);
	running = NULL;
	rc = scrub_exit_status(&st, r);
	report(&o, uuid, &opt, &st, rc, r, false);
	if (r == 0 && !opt.dry_run && !opt.skip_namespace && !st.errors_left &&
	    !st.frags_unreachable)
		clear_refill(meta, &o);
out:
	scrub_free(s);
	blockstore_free(bs);
	meta_close(meta);
	for (size_t i = 0; i < o.n_items; i++)
		free(o.items[i]);
	free(o.items);
	return rc;
}
