/*
 * tessera: the administration command. It manages the server list of an unmounted
 * filesystem (the superblock in META_DIR) and backs the metadata up:
 *
 *   tessera server list META_DIR
 *   tessera server add META_DIR URL[,zone=Z][,weight=W]
 *   tessera server remove META_DIR ID
 *   tessera server replace META_DIR ID URL[,zone=Z][,weight=W]
 *   tessera meta backup META_DIR|MOUNTPOINT DEST
 *   tessera meta restore --server URL... --credentials FILE [--uuid UUID] NEW_META_DIR
 *   tessera status META_DIR|MOUNTPOINT
 *
 * status and server list also work while the filesystem is mounted: they read a view of the
 * metadata (meta_open_read_only()). status asks every active server for its /-/status and
 * for a signed probe: up, down or refusing the key, with capacity and free bytes.
 * add gives the new server the next unused id. remove retires a server (META_SERVER_F_RETIRED):
 * nothing new goes to it and it is never read again; the fragments the stripe maps still place
 * on it count as missing until tessera-scrub rebuilds them on the other servers. replace gives
 * server ID a new address (a machine moved, or an empty replacement): the fragments that are
 * not on the server at the new address are rebuilt there by tessera-scrub. Zone and weight stay
 * unless the specification names them. Ids are never reused.
 *
 * A change is refused when it would leave fewer active servers than k+m (every fragment of a
 * stripe goes to a different server), when a new address duplicates an active server's, and,
 * unless --force, when the new server does not answer a signed listing of the bucket with the
 * filesystem's access key, or while the previous remove or replace is not settled: each one
 * costs every stripe on that server a fragment until tessera-scrub has rebuilt it, so two
 * before a scrub could leave stripes with fewer than k (a replaced server is flagged
 * META_SERVER_F_REFILL until a complete scrub clears it; a retired one is settled when no
 * stripe map names it any more). The metadata must not be in use (the daemon holds its lock while
 * mounted): the change is one synced superblock write.
 *
 * meta backup writes a RocksDB checkpoint (meta_backup()) into DEST, a new directory that
 * tesserafs can mount; on a mounted filesystem the daemon makes it (control socket).
 *
 * Exit status: 0 success, 1 operational error (metadata in use or unreadable, server not
 * answering, change refused), 2 usage error. Single-threaded.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/control.h"
#include "tessera/meta.h"
#include "tessera/proto.h"
#include "tessera/scrub.h"
#include "tessera/stripe.h"

#include "cli.h"
#include "restore.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

static const char *prog = "tessera";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s server list META_DIR\n"
		"       %s server add [--force] META_DIR URL[,zone=Z][,weight=W]\n"
		"       %s server remove [--force] META_DIR ID\n"
		"       %s server replace [--force] META_DIR ID URL[,zone=Z][,weight=W]\n"
		"       %s meta backup META_DIR|MOUNTPOINT DEST\n"
		"       %s meta restore --server URL [--server URL]... --credentials FILE\n"
		"               [--uuid UUID] [--bucket B] [--region R] NEW_META_DIR\n"
		"       %s status META_DIR|MOUNTPOINT\n"
		"Administer a tesserafs filesystem: its server list (unmounted), its metadata.\n"
		"\n"
		"  list      every server: id, state (active or retired), URL, zone, weight\n"
		"  add       a new server with the next unused id; new stripes use it at once\n"
		"  remove    retire server ID: it gets nothing new and is never read again; run\n"
		"            tessera-scrub afterwards to rebuild its fragments on the others\n"
		"  replace   give server ID a new address (zone and weight kept unless given);\n"
		"            run tessera-scrub afterwards to rebuild what the new one lacks\n"
		"  backup    a consistent copy of the metadata in DEST (a new directory that\n"
		"            tesserafs can mount); mounted or not\n"
		"  restore   rebuild the metadata in NEW_META_DIR from the servers alone (their\n"
		"            journal: the newest checkpoint and every record after it); mounting\n"
		"            it takes the filesystem over from a lost metadata machine\n"
		"  status    the filesystem's profile and every server's state, capacity and\n"
		"            free space; mounted or not (list too)\n"
		"\n"
		"  -f, --force   skip the check that the new server answers with the filesystem's\n"
		"                key, and allow removing a server below k+m active ones\n"
		"  -h, --help    show this help\n"
		"\n"
		"Exit status: 0 success, 1 operational error, 2 usage error.\n",
		prog, prog, prog, prog, prog, prog, prog);
}

static const struct cli_style style = { "tessera", "", "", EXIT_USAGE, EXIT_FAIL };
#define usage_error(...) cli_usage_error(&style, __VA_ARGS__)
#define fail(...) cli_fail(&style, __VA_ARGS__)

static int open_meta(const char *dir, struct meta **ret)
{
	int r = meta_open(dir, ret);

	if (r == -EBUSY)
		return fail("'%s' is in use (mounted?): unmount the filesystem first", dir);
	if (r == -ENOENT)
		return fail("'%s': no tesserafs filesystem there", dir);
	if (r < 0)
		return fail("cannot open metadata '%s': %s", dir, strerror(-r));
	return 0;
}

static unsigned active_count(const struct meta_superblock *sb)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < sb->n_servers; i++)
		n += !(sb->servers[i].flags & META_SERVER_F_RETIRED);
	return n;
}

static int parse_id(const char *s, const struct meta_superblock *sb, uint32_t *ret_pos)
{
	uint64_t id;

	if (tparse_uint(s, 0, UINT16_MAX, &id) < 0)
		return usage_error("invalid server id '%s'", s);
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		if (sb->servers[i].id == id) {
			*ret_pos = i;
			return 0;
		}
	}
	return fail("no server %s in the list ('%s server list' shows them)", s, prog);
}

/* Another active server (not at position skip) already at url. */
static const struct meta_server *url_taken(const struct meta_superblock *sb, const char *url,
					   uint32_t skip)
{
	for (uint32_t i = 0; i < sb->n_servers; i++)
		if (i != skip && !(sb->servers[i].flags & META_SERVER_F_RETIRED) &&
		    strcmp(sb->servers[i].url, url) == 0)
			return &sb->servers[i];
	return NULL;
}

/* Asks the server at sv->url for one entry of the bucket's listing, signed with the
 * filesystem's key: proves the address, the bucket and the key in one request. */
static int probe(const char *dir, const struct meta_superblock *sb, const struct meta_server *sv)
{
	struct blockclient_config cfg = { .connect_timeout_ms = 2000, .request_timeout_ms = 5000 };
	struct blockstore *bs = NULL;
	struct blockclient_object *obj = NULL;
	const char *url = sv->url;
	char token[BLOCKCLIENT_LIST_KEY_MAX + 1];
	size_t n;
	int r;

	r = stripe_client_config(dir, sb, &cfg);
	if (r < 0)
		return fail("no usable access key (credentials '%s'): %s", sb->credentials,
			    strerror(-r));
	r = blockstore_client_new(&cfg, &sv->id, &url, 1, &bs);
	memset(&cfg, 0, sizeof(cfg));
	if (r < 0)
		return fail("cannot set up the block client: %s", strerror(-r));
	obj = malloc(sizeof(*obj));
	r = obj ? blockstore_list(bs, sv->id, "", NULL, obj, 1, &n, token, sizeof(token))
		: -ENOMEM;
	free(obj);
	blockstore_free(bs);
	if (r == -ENOENT)
		return 0; /* signature accepted; an empty server has no bucket until a first PUT */
	if (r == -EACCES)
		return fail("%s refuses the filesystem's access key (use --force to add it anyway)",
			    url);
	if (r < 0)
		return fail("%s does not answer: %s (use --force to add it anyway)", url,
			    strerror(-r));
	return 0;
}

struct drain_scan {
	const struct meta_superblock *sb;
	uint64_t stripes;  /* stripes with a fragment on a retired server */
	uint16_t example;  /* one such server */
};

static int drain_one(void *ctx, uint64_t ino, uint64_t stripe, const struct meta_stripe *rec)
{
	struct drain_scan *d = ctx;

	(void)ino;
	(void)stripe;
	for (unsigned i = 0; i < (unsigned)rec->k + rec->m && i < 64; i++) {
		const struct meta_server *sv;
		if (!(rec->present & (1ull << i)))
			continue;
		sv = meta_server_find(d->sb, rec->servers[i]);
		if (sv && (sv->flags & META_SERVER_F_RETIRED)) {
			d->example = sv->id;
			d->stripes++;
			break;
		}
	}
	return 0;
}

/* Every remove or replace costs each stripe on that server one fragment until a scrub has
 * rebuilt it: a second one before that could leave stripes with fewer than k. Refuses while
 * a replaced server is not refilled or a retired one still holds fragments. */
static int check_settled(struct meta *meta, const struct meta_superblock *sb)
{
	struct drain_scan d = { .sb = sb };
	int r;

	for (uint32_t i = 0; i < sb->n_servers; i++)
		if (sb->servers[i].flags & META_SERVER_F_REFILL)
			return fail("server %u was given a new address and is not refilled yet: run "
				    "tessera-scrub first (or --force)",
				    sb->servers[i].id);
	r = meta_stripe_list_all(meta, drain_one, &d);
	if (r < 0)
		return fail("cannot read the stripe maps: %s", strerror(-r));
	if (d.stripes)
		return fail("retired server %u still holds fragments of %llu stripe(s): run "
			    "tessera-scrub first (or --force)",
			    d.example, (unsigned long long)d.stripes);
	return 0;
}

static int cmd_list(const struct meta_superblock *sb)
{
	printf("%-5s %-9s %-40s %-12s %s\n", "ID", "STATE", "URL", "ZONE", "WEIGHT");
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];

		printf("%-5u %-9s %-40s %-12s %" PRIu64 "\n", sv->id,
		       sv->flags & META_SERVER_F_RETIRED  ? "retired"
		       : sv->flags & META_SERVER_F_REFILL ? "refilling"
							  : "active",
		       sv->url, sv->zone[0] ? sv->zone : "-", sv->weight);
	}
	printf("k=%u m=%u: %u active servers, %u needed\n", sb->k, sb->m, active_count(sb),
	       sb->k + sb->m);
	return 0;
}

static int commit(struct meta *meta, const struct meta_superblock *sb)
{
	int r = meta_superblock_update(meta, sb);

	if (r < 0)
		return fail("cannot write the superblock: %s", strerror(-r));
	return 0;
}

/* Makes dest absolute (its parent resolved; dest itself need not exist) into out. */
static int absolute_dest(const char *dest, char *out, size_t size)
{
	char parent[PATH_MAX], real[PATH_MAX];
	const char *base;
	const char *slash = strrchr(dest, '/');
	size_t n = slash ? (size_t)(slash - dest) : 0;

	base = slash ? slash + 1 : dest;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -EINVAL;
	if (n >= sizeof(parent))
		return -ENAMETOOLONG;
	if (slash && n == 0)
		strcpy(parent, "/");
	else if (slash) {
		memcpy(parent, dest, n);
		parent[n] = '\0';
	} else
		strcpy(parent, ".");
	if (!realpath(parent, real))
		return -errno;
	if (snprintf(out, size, "%s/%s", strcmp(real, "/") == 0 ? "" : real, base) >= (int)size)
		return -ENAMETOOLONG;
	return 0;
}

static int backup_mounted(const char *meta_dir, const char *dest)
{
	struct control_conn *c = NULL;
	int r, result = 0;

	r = control_connect(meta_dir, &c);
	if (r < 0)
		return fail("cannot reach the daemon of '%s': %s", meta_dir, strerror(-r));
	r = control_backup(c, dest, &result);
	control_close(c);
	if (r == -EBUSY)
		return fail("the daemon is busy (a scrub runs); try again later");
	if (r < 0)
		return fail("backup through the daemon of '%s' failed: %s", meta_dir, strerror(-r));
	if (result < 0)
		return fail("cannot back up to '%s': %s", dest, strerror(-result));
	return 0;
}

static const char *human(uint64_t v, char *buf, size_t size)
{
	tformat_bytes(v, buf, size);
	return buf;
}

/* The daemon's health table, through its control socket. 0 or -errno. */
static int daemon_health(const char *dir, struct control_server_health *out, size_t max,
			 size_t *ret_n)
{
	struct control_conn *c = NULL;
	int r = control_connect(dir, &c);

	if (r == 0)
		r = control_health(c, out, max, ret_n);
	control_close(c);
	if (r < 0)
		fprintf(stderr, "%s: the daemon's view of the servers is not available: %s\n", prog,
			strerror(-r));
	return r;
}

/* "up for 5 min", "down for 12 s (Connection refused)". */
static void health_view(const struct control_server_health *h, char *out, size_t size)
{
	int64_t age = (int64_t)time(NULL) - h->since_s;
	char when[32];

	if (age < 0)
		age = 0;
	if (age < 120)
		snprintf(when, sizeof(when), "%lld s", (long long)age);
	else if (age < 7200)
		snprintf(when, sizeof(when), "%lld min", (long long)(age / 60));
	else
		snprintf(when, sizeof(when), "%lld h", (long long)(age / 3600));
	snprintf(out, size, "%s for %s%s%s%s", blockclient_health_name(h->state), when,
		 h->state != BLOCKCLIENT_UP ? " (" : "",
		 h->state != BLOCKCLIENT_UP ? strerror(-h->last_err) : "",
		 h->state != BLOCKCLIENT_UP ? ")" : "");
}

/* tessera status SOURCE */
static int status_main(const char *src)
{
	struct blockclient_config cfg = { .connect_timeout_ms = 2000, .request_timeout_ms = 5000 };
	struct blockstore_status st[META_MAX_SERVERS];
	struct blockstore *bs = NULL;
	struct meta *meta = NULL;
	uint16_t ids[META_MAX_SERVERS];
	int refused[META_MAX_SERVERS] = { 0 };
	char dir[PATH_MAX], key[PROTO_KEY_MAX], uuid[37], a[16], b[16];
	bool mounted = control_mount_source(src, dir, sizeof(dir));
	int r, rc = EXIT_FAIL;

	if (!mounted)
		snprintf(dir, sizeof(dir), "%s", src);
	r = meta_open(dir, &meta); /* busy: a daemon has it, i.e. it is mounted */
	if (r == -EBUSY) {
		mounted = true;
		r = meta_open_read_only(dir, &meta);
	} else if (r == 0 && mounted) {
		meta_close(meta); /* a mount whose daemon is gone: report what is there */
		r = meta_open_read_only(dir, &meta);
	}
	if (r < 0)
		return fail("cannot open metadata '%s': %s", dir,
			    r == -ENOENT ? "no tesserafs filesystem there" : strerror(-r));
	const struct meta_superblock *sb = meta_superblock(meta);
	tuuid_format(sb->fs_uuid, uuid);
	printf("filesystem %s: k=%u m=%u, stripe %s, write quorum %u, inline up to %u bytes\n", uuid,
	       sb->k, sb->m, human(sb->stripe_size, a, sizeof(a)), sb->write_quorum, sb->inline_max);
	printf("metadata %s, %s\n", dir, mounted ? "in use (mounted)" : "not mounted");

	for (uint32_t i = 0; i < sb->n_servers; i++)
		ids[i] = sb->servers[i].id;
	r = stripe_client_config(dir, sb, &cfg);
	if (r < 0) {
		fprintf(stderr, "%s: no usable access key (credentials '%s'): %s; the key is not "
			"checked\n", prog, sb->credentials, strerror(-r));
		strcpy(cfg.access_key, "none"); /* /-/status needs no key */
		strcpy(cfg.secret_key, "none");
	}
	if (stripe_store_new(sb, &cfg, &bs) < 0) {
		fail("cannot set up the block client");
		goto out;
	}
	if (blockstore_status(bs, ids, sb->n_servers, true, st) < 0) {
		fail("out of memory");
		goto out;
	}
	proto_access_key(key, sizeof(key), sb->fs_uuid);
	if (r == 0 && blockstore_check_access(bs, ids, sb->n_servers, key, refused) < 0) {
		fail("out of memory");
		goto out;
	}
	/* Mounted: the daemon's own view of every server too (its prober's state, and since when). */
	struct control_server_health health[META_MAX_SERVERS];
	size_t n_health = 0;
	bool have_health = mounted && daemon_health(dir, health, TESSERA_ARRAY_SIZE(health),
						    &n_health) == 0;
	printf("%-5s %-9s %-32s %-10s %-8s %11s %11s  %s\n", "ID", "STATE", "URL", "ZONE", "ANSWER",
	       "CAPACITY", "FREE", have_health ? "DAEMON" : "");
	unsigned active = 0, answering = 0;
	uint64_t cap_all = 0, free_all = 0;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];
		const bool retired = sv->flags & META_SERVER_F_RETIRED;
		const char *answer = st[i].result	   ? "down"
				     : refused[i] == -ETIME ? "skewed"
				     : refused[i]	   ? "refuses"
							   : "up";
		uint64_t cap = st[i].capacity, fr = st[i].free;

		if (!retired) {
			active++;
			answering += !st[i].result && !refused[i];
			cap_all += cap;
			free_all += fr;
		}
		char view[96] = "";
		for (size_t h = 0; have_health && h < n_health; h++)
			if (health[h].id == sv->id)
				health_view(&health[h], view, sizeof(view));
		printf("%-5u %-9s %-32s %-10s %-8s %11s %11s  %s\n", sv->id,
		       retired ? "retired" : sv->flags & META_SERVER_F_REFILL ? "refilling" : "active",
		       sv->url, sv->zone[0] ? sv->zone : "-", answer,
		       st[i].result ? "-" : human(cap, a, sizeof(a)),
		       st[i].result ? "-" : human(fr, b, sizeof(b)), view);
	}
	printf("%u of %u active servers answer with the key; %u+%u needs %u; raw capacity %s, free %s\n",
	       answering, active, sb->k, sb->m, sb->k + sb->m, human(cap_all, a, sizeof(a)),
	       human(free_all, b, sizeof(b)));
	rc = 0;
out:
	blockstore_free(bs);
	meta_close(meta);
	return rc;
}

/* tessera meta backup SOURCE DEST */
static int meta_main(int argc, char **argv)
{
	char dest[PATH_MAX], dir[PATH_MAX];
	struct meta *meta = NULL;
	int r, rc;

	if (argc >= 3 && strcmp(argv[2], "restore") == 0)
		return restore_main(&style, argc - 2, argv + 2);
	if (argc < 3 || strcmp(argv[2], "backup") != 0)
		return usage_error(argc < 3 ? "'meta' needs a command (backup, restore)"
					    : "unknown meta command (backup, restore)");
	if (argc != 5)
		return usage_error("'meta backup' takes 2 arguments");
	r = absolute_dest(argv[4], dest, sizeof(dest));
	if (r < 0)
		return fail("bad destination '%s': %s", argv[4], strerror(-r));
	if (control_mount_source(argv[3], dir, sizeof(dir))) {
		rc = backup_mounted(dir, dest);
	} else {
		snprintf(dir, sizeof(dir), "%s", argv[3]);
		r = meta_open(dir, &meta);
		if (r == -EBUSY) {
			rc = backup_mounted(dir, dest); /* a daemon holds it */
		} else if (r < 0) {
			rc = fail("cannot open metadata '%s': %s", dir,
				  r == -ENOENT ? "no tesserafs filesystem there" : strerror(-r));
		} else {
			r = meta_backup(meta, dest);
			meta_close(meta);
			rc = r < 0 ? fail("cannot back up to '%s': %s", dest, strerror(-r)) : 0;
		}
	}
	if (rc == 0)
		printf("metadata backed up to %s\n", dest);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct meta_superblock *sb = NULL;
	struct meta *meta = NULL;
	bool force = false;
	const char *cmd, *dir;
	char err[320];
	uint32_t pos;
	int c, rc;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 2)
		return usage_error("no command");
	if (strcmp(argv[1], "meta") == 0)
		return meta_main(argc, argv);
	if (strcmp(argv[1], "status") == 0) {
		if (argc != 3)
			return usage_error("'status' takes 1 argument");
		return status_main(argv[2]);
	}
	if (strcmp(argv[1], "server") != 0)
		return usage_error("unknown command '%s' (server, meta, status)", argv[1]);
	if (argc < 3)
		return usage_error("'server' needs a command (list, add, remove, replace)");
	cmd = argv[2];
	optind = 3;
	while ((c = getopt_long(argc, argv, "fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			force = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage_error("invalid option");
		}
	}
	const int nargs = argc - optind;
	const int want = strcmp(cmd, "list") == 0	 ? 1
			 : strcmp(cmd, "add") == 0	 ? 2
			 : strcmp(cmd, "remove") == 0	 ? 2
			 : strcmp(cmd, "replace") == 0 ? 3
						       : -1;
	if (want < 0)
		return usage_error("unknown server command '%s' (list, add, remove, replace)", cmd);
	if (nargs != want)
		return usage_error("'server %s' takes %d argument%s", cmd, want, want > 1 ? "s" : "");
	dir = argv[optind];

	if (strcmp(cmd, "list") == 0) {
		int r = meta_open_read_only(dir, &meta); /* also while mounted */
		if (r < 0)
			return fail("cannot open metadata '%s': %s", dir,
				    r == -ENOENT ? "no tesserafs filesystem there" : strerror(-r));
	} else if ((rc = open_meta(dir, &meta))) {
		return rc;
	}
	sb = malloc(sizeof(*sb));
	if (!sb) {
		rc = fail("out of memory");
		goto out;
	}
	memcpy(sb, meta_superblock(meta), sizeof(*sb));

	if (strcmp(cmd, "list") == 0) {
		rc = cmd_list(sb);
	} else if (strcmp(cmd, "add") == 0) {
		struct meta_server sv;
		uint32_t next = 0;

		if (meta_server_parse(argv[optind + 1], &sv, err, sizeof(err)) < 0) {
			rc = usage_error("%s", err);
			goto out;
		}
		if (sb->n_servers >= META_MAX_SERVERS) {
			rc = fail("the list is full (%d servers, retired ones included)",
				  META_MAX_SERVERS);
			goto out;
		}
		for (uint32_t i = 0; i < sb->n_servers; i++)
			if (sb->servers[i].id >= next)
				next = sb->servers[i].id + 1u;
		if (next > UINT16_MAX) {
			rc = fail("no server id left");
			goto out;
		}
		const struct meta_server *dup = url_taken(sb, sv.url, UINT32_MAX);
		if (dup) {
			rc = fail("server %u already has the address %s", dup->id, sv.url);
			goto out;
		}
		sv.id = (uint16_t)next;
		if (!force && (rc = probe(dir, sb, &sv)))
			goto out;
		sb->servers[sb->n_servers++] = sv;
		rc = commit(meta, sb);
		if (!rc)
			printf("server %u added: %s\n", sv.id, sv.url);
	} else if (strcmp(cmd, "remove") == 0) {
		rc = parse_id(argv[optind + 1], sb, &pos);
		if (rc)
			goto out;
		struct meta_server *sv = &sb->servers[pos];
		if (sv->flags & META_SERVER_F_RETIRED) {
			rc = fail("server %u is already retired", sv->id);
			goto out;
		}
		if (!force && (rc = check_settled(meta, sb)))
			goto out;
		if (active_count(sb) - 1 < sb->k + sb->m && !force) {
			rc = fail("removing server %u would leave %u active servers, fewer than "
				  "k+m = %u: its fragments could not be rebuilt elsewhere (add a "
				  "server first, or --force)",
				  sv->id, active_count(sb) - 1, sb->k + sb->m);
			goto out;
		}
		sv->flags |= META_SERVER_F_RETIRED;
		rc = commit(meta, sb);
		if (!rc)
			printf("server %u (%s) retired: run tessera-scrub %s to rebuild its "
			       "fragments on the other servers\n",
			       sv->id, sv->url, dir);
	} else {
		struct meta_server nsv;
		const char *spec = argv[optind + 2];

		rc = parse_id(argv[optind + 1], sb, &pos);
		if (rc)
			goto out;
		if (meta_server_parse(spec, &nsv, err, sizeof(err)) < 0) {
			rc = usage_error("%s", err);
			goto out;
		}
		struct meta_server *sv = &sb->servers[pos];
		if (sv->flags & META_SERVER_F_RETIRED) {
			rc = fail("server %u is retired; add the new server instead", sv->id);
			goto out;
		}
		const struct meta_server *dup = url_taken(sb, nsv.url, pos);
		if (dup) {
			rc = fail("server %u already has the address %s", dup->id, nsv.url);
			goto out;
		}
		if (!force && (rc = check_settled(meta, sb)))
			goto out;
		nsv.id = sv->id;
		nsv.flags = META_SERVER_F_REFILL;
		if (!strstr(spec, ",zone="))
			memcpy(nsv.zone, sv->zone, sizeof(nsv.zone));
		if (!strstr(spec, ",weight="))
			nsv.weight = sv->weight;
		if (!force && (rc = probe(dir, sb, &nsv)))
			goto out;
		char old[sizeof(sv->url)];
		memcpy(old, sv->url, sizeof(old));
		*sv = nsv;
		rc = commit(meta, sb);
		if (!rc)
			printf("server %u moved from %s to %s: run tessera-scrub %s to rebuild "
			       "what it lacks\n",
			       sv->id, old, sv->url, dir);
	}
out:
	free(sb);
	meta_close(meta);
	return rc;
}
