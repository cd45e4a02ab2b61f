/*
 * tessera-mkfs (also mkfs.tesserafs): creates a filesystem. It validates the erasure-code
 * profile and the server list, writes the superblock and the root directory into a new
 * metadata directory (meta_mkfs()) and stores the S3 credentials the daemon and the scrubber
 * use next to it (META_DIR/credentials, mode 0600, "ACCESS_KEY SECRET_KEY").
 *
 * It does not contact the servers: they may be started later, and placement only needs the
 * list. Settings come from the command line, then a --config file (key = value lines with the
 * long option names), then defaults; the keys may also come from the environment.
 *
 * Exit status: 0 success, 1 operational error (existing filesystem without --force, I/O),
 * 2 usage error (bad option, invalid profile or server list).
 * Single-threaded; nothing here outlives the process.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tessera/common.h"
#include "tessera/meta.h"

#include "cli.h"

#define EXIT_USAGE 2
#define MKFS_KEY_MAX 128
#define MKFS_CONFIG_MAX (1u << 20)
#define MKFS_STRIPE_DEFAULT (4u << 20)

static const char *prog = "tessera-mkfs";

/* Raw settings as given, before validation; the strings are borrowed from argv, the
 * environment or the config file buffer. */
struct mkfs_settings {
	const char *servers[META_MAX_SERVERS];
	unsigned n_servers;
	const char *k, *m, *stripe_size, *quorum, *bucket, *region, *inline_max;
	const char *access_key, *secret_key, *uuid;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [options] META_DIR\n"
		"Create a tesserafs filesystem whose metadata lives in META_DIR.\n"
		"\n"
		"  --server URL[,zone=Z][,weight=W]\n"
		"                      a block server (repeat for each; base URL such as\n"
		"                      http://127.0.0.1:9000); ids 0..n-1 in the order given,\n"
		"                      weight default 1 (accepts sizes such as 4T)\n"
		"  --k K               data fragments per stripe (default 4, at most 32)\n"
		"  --m M               parity fragments per stripe (default 2, 1..16)\n"
		"  --stripe-size SIZE  file bytes per stripe (a multiple of k*64, at most\n"
		"                      k*64M; default 4M, rounded down to a multiple of k*64)\n"
		"  --quorum Q          fragments stored before a write succeeds\n"
		"                      (default k+1, k <= Q <= k+m)\n"
		"  --inline-max SIZE   files up to SIZE keep their data in the metadata instead\n"
		"                      of on the servers (default 4k, at most 64k; 0 = never)\n"
		"  --bucket NAME       S3 bucket on every server (default tessera)\n"
		"  --region R          SigV4 region (default us-east-1)\n"
		"  --access-key A      S3 access key (else $TESSERA_ACCESS_KEY)\n"
		"  --secret-key S      S3 secret key (else $TESSERA_SECRET_KEY)\n"
		"  --config FILE       read 'key = value' lines with the long option names\n"
		"                      (server repeatable, # comments); the command line wins\n"
		"  --uuid UUID         filesystem uuid (default random)\n"
		"  -f, --force         overwrite an existing filesystem in META_DIR\n"
		"  -q, --quiet         print nothing on success\n"
		"  -h, --help          show this help\n"
		"\n"
		"k+m must not exceed the number of servers: each fragment of a stripe goes to a\n"
		"different server.\n"
		"Exit status: 0 success, 1 operational error, 2 usage error.\n",
		prog);
}

static const struct cli_style style = { "tessera-mkfs", "error: ", " for more information",
				     EXIT_USAGE, EXIT_FAILURE };
#define usage_error(...) cli_usage_error(&style, __VA_ARGS__)
#define fail(...) cli_fail(&style, __VA_ARGS__)

/* ---- parsing helpers ---- */

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret)
{
	uint64_t v;
	int r = tparse_uint(s, min, max, &v);

	if (r == 0)
		*ret = (uint32_t)v;
	return r;
}

static bool valid_chars(const char *s, const char *extra)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
			return false;
	return true;
}

/* S3 bucket naming rules: 3..63 of [a-z0-9.-], alphanumeric at both ends, no "..". */
static bool valid_bucket(const char *b)
{
	size_t n = strlen(b);

	if (n < 3 || n > 63 || strstr(b, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)b[i]) && !isdigit((unsigned char)b[i]) &&
		    b[i] != '.' && b[i] != '-')
			return false;
	return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

/* Keys are stored space-separated on one line: printable ASCII without whitespace. */
static bool valid_key(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > MKFS_KEY_MAX)
		return false;
	for (; *k; k++)
		if (*k < 0x21 || *k > 0x7e)
			return false;
	return true;
}

/* Parses "URL[,zone=Z][,weight=W]" into sv (id not set). Returns 0 or a usage error. */
static int parse_server(const char *spec, struct meta_server *sv)
{
	char err[320];

	if (meta_server_parse(spec, sv, err, sizeof(err)) < 0)
		return usage_error("%s", err);
	return 0;
}

/* ---- config file ---- */

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Stores key = value into st (the value borrowed from the config buffer). */
static int config_set(struct mkfs_settings *st, const char *path, unsigned line, char *key,
		      const char *value)
{
	static const struct {
		const char *name;
		size_t off;
	} keys[] = {
		{ "k", offsetof(struct mkfs_settings, k) },
		{ "m", offsetof(struct mkfs_settings, m) },
		{ "stripe-size", offsetof(struct mkfs_settings, stripe_size) },
		{ "quorum", offsetof(struct mkfs_settings, quorum) },
		{ "inline-max", offsetof(struct mkfs_settings, inline_max) },
		{ "bucket", offsetof(struct mkfs_settings, bucket) },
		{ "region", offsetof(struct mkfs_settings, region) },
		{ "access-key", offsetof(struct mkfs_settings, access_key) },
		{ "secret-key", offsetof(struct mkfs_settings, secret_key) },
		{ "uuid", offsetof(struct mkfs_settings, uuid) },
	};

	for (char *p = key; *p; p++)
		if (*p == '_')
			*p = '-';
	if (strcmp(key, "server") == 0) {
		if (st->n_servers >= META_MAX_SERVERS)
			return usage_error("'%s' line %u: more than %d servers", path, line,
					   META_MAX_SERVERS);
		st->servers[st->n_servers++] = value;
		return 0;
	}
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(keys); i++) {
		if (strcmp(key, keys[i].name) == 0) {
			*(const char **)((char *)st + keys[i].off) = value;
			return 0;
		}
	}
	return usage_error("'%s' line %u: unknown key '%s'", path, line, key);
}

/* Reads path into st. *ret_buf keeps the strings alive (free with free()). Returns 0, or an
 * exit code. */
static int config_read(const char *path, struct mkfs_settings *st, char **ret_buf)
{
	char *buf = NULL, *line, *next;
	size_t len;
	unsigned lineno = 0;
	int r;

	r = tfile_read_all(path, MKFS_CONFIG_MAX, &buf, &len);
	if (r < 0)
		return fail("cannot read config '%s': %s", path, strerror(-r));
	if (memchr(buf, '\0', len)) {
		free(buf);
		return usage_error("config '%s' is not a text file", path);
	}
	for (line = buf; line; line = next) {
		char *eq, *key, *value, *hash;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		/* comments: '#' at the start or after whitespace (keys contain no spaces) */
		for (hash = line; (hash = strchr(hash, '#')); hash++)
			if (hash == line || isspace((unsigned char)hash[-1])) {
				*hash = '\0';
				break;
			}
		line = trim(line);
		if (*line == '\0')
			continue;
		eq = strchr(line, '=');
		if (!eq) {
			free(buf);
			return usage_error("config '%s' line %u: expected 'key = value'", path,
					   lineno);
		}
		*eq = '\0';
		key = trim(line);
		value = trim(eq + 1);
		len = strlen(value);
		if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
			value[len - 1] = '\0';
			value++;
		}
		if (*key == '\0' || *value == '\0') {
			free(buf);
			return usage_error("config '%s' line %u: empty key or value", path, lineno);
		}
		r = config_set(st, path, lineno, key, value);
		if (r) {
			free(buf);
			return r;
		}
	}
	*ret_buf = buf;
	return 0;
}

/* ---- the superblock ---- */

/* Validates the merged settings into sb. Returns 0 or EXIT_USAGE. */
static int build_superblock(const struct mkfs_settings *st, struct meta_superblock *sb)
{
	uint64_t stripe;
	uint32_t k = 0, m = 0, q;
	int r;

	if (parse_u32(st->k, 1, 32, &k) < 0)
		return usage_error("invalid --k '%s' (1..32)", st->k);
	if (parse_u32(st->m, 1, 16, &m) < 0)
		return usage_error("invalid --m '%s' (1..16)", st->m);
	if (!st->stripe_size) {
		/* the default, rounded down to a multiple of k*64 */
		stripe = MKFS_STRIPE_DEFAULT - MKFS_STRIPE_DEFAULT % ((uint64_t)k * 64);
	} else if (tparse_size(st->stripe_size, &stripe) < 0 || stripe == 0) {
		return usage_error("invalid --stripe-size '%s'", st->stripe_size);
	}
	if (stripe % ((uint64_t)k * 64) != 0)
		return usage_error("--stripe-size %" PRIu64 " is not a multiple of k*64 = %u",
				   stripe, k * 64);
	if (stripe > (uint64_t)k * (64u << 20))
		return usage_error("--stripe-size %" PRIu64 " is larger than k*64M = %" PRIu64,
				   stripe, (uint64_t)k * (64u << 20));
	q = k + 1;
	if (st->quorum && parse_u32(st->quorum, 1, 64, &q) < 0)
		return usage_error("invalid --quorum '%s'", st->quorum);
	if (q < k || q > k + m)
		return usage_error("--quorum %u is outside k..k+m = %u..%u", q, k, k + m);
	uint64_t inl = 4096;
	if (st->inline_max && (tparse_size(st->inline_max, &inl) < 0 || inl > META_INLINE_MAX))
		return usage_error("invalid --inline-max '%s' (at most %u)", st->inline_max,
				   META_INLINE_MAX);
	if (!valid_bucket(st->bucket))
		return usage_error("invalid --bucket '%s' (S3 rules: 3..63 of [a-z0-9.-])",
				   st->bucket);
	if (strlen(st->region) == 0 || strlen(st->region) >= sizeof(sb->region) ||
	    !valid_chars(st->region, "_-"))
		return usage_error("invalid --region '%s'", st->region);

	if (st->n_servers == 0)
		return usage_error("no --server given");
	for (unsigned i = 0; i < st->n_servers; i++) {
		r = parse_server(st->servers[i], &sb->servers[i]);
		if (r)
			return r;
		sb->servers[i].id = (uint16_t)i;
		for (unsigned j = 0; j < i; j++)
			if (strcasecmp(sb->servers[j].url, sb->servers[i].url) == 0)
				return usage_error("server '%s' is given twice", sb->servers[i].url);
	}
	sb->n_servers = st->n_servers;
	if (k + m > st->n_servers)
		return usage_error("k+m = %u fragments per stripe need at least %u servers, "
				   "%u given (each fragment goes to a different server)",
				   k + m, k + m, st->n_servers);

	if (st->uuid) {
		static const uint8_t nil[16];

		if (tuuid_parse(st->uuid, sb->fs_uuid) < 0 || memcmp(sb->fs_uuid, nil, 16) == 0)
			return usage_error("invalid --uuid '%s'", st->uuid);
	} else {
		if (trandom_bytes(sb->fs_uuid, 16) < 0)
			return fail("cannot get random bytes for the uuid");
		sb->fs_uuid[6] = (uint8_t)((sb->fs_uuid[6] & 0x0f) | 0x40); /* version 4 */
		sb->fs_uuid[8] = (uint8_t)((sb->fs_uuid[8] & 0x3f) | 0x80); /* RFC 4122 */
	}

	sb->format_version = META_FORMAT_VERSION;
	sb->k = k;
	sb->m = m;
	sb->stripe_size = (uint32_t)stripe;
	sb->write_quorum = q;
	sb->inline_max = (uint32_t)inl;
	sb->create_time_ns = tclock_realtime_ns();
	strcpy(sb->bucket, st->bucket);
	strcpy(sb->region, st->region);
	strcpy(sb->credentials, "file:credentials");
	return 0;
}

static void print_summary(const char *dir, const struct meta_superblock *sb)
{
	char uuid[37];
	uint32_t s = sb->stripe_size;

	tuuid_format(sb->fs_uuid, uuid);
	printf("created tesserafs filesystem in '%s'\n", dir);
	printf("  uuid          %s\n", uuid);
	printf("  erasure code  k=%u m=%u (%u+%u fragments per stripe), write quorum %u\n",
	       sb->k, sb->m, sb->k, sb->m, sb->write_quorum);
	printf("  inline files  up to %u bytes kept in the metadata\n", sb->inline_max);
	if (s % (1u << 20) == 0)
		printf("  stripe size   %u MiB\n", s >> 20);
	else if (s % 1024 == 0)
		printf("  stripe size   %u KiB\n", s >> 10);
	else
		printf("  stripe size   %u bytes\n", s);
	printf("  bucket        %s (region %s)\n", sb->bucket, sb->region);
	printf("  servers       %u\n", sb->n_servers);
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];

		printf("    %3u  %s", sv->id, sv->url);
		if (sv->zone[0])
			printf("  zone=%s", sv->zone);
		printf("  weight=%" PRIu64 "\n", sv->weight);
	}
}

static int write_credentials(const char *dir, const char *access, const char *secret)
{
	char path[4096], line[2 * MKFS_KEY_MAX + 3];
	int n, r;

	if (snprintf(path, sizeof(path), "%s/credentials", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	n = snprintf(line, sizeof(line), "%s %s\n", access, secret);
	r = tfile_write_atomic(path, line, (size_t)n, 0600);
	explicit_bzero(line, sizeof(line));
	return r;
}

int main(int argc, char **argv)
{
	enum { OPT_SERVER = 256, OPT_K, OPT_M, OPT_STRIPE, OPT_QUORUM, OPT_BUCKET, OPT_REGION,
	       OPT_ACCESS, OPT_SECRET, OPT_CONFIG, OPT_UUID, OPT_INLINE };
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, OPT_SERVER },
		{ "k", required_argument, NULL, OPT_K },
		{ "m", required_argument, NULL, OPT_M },
		{ "stripe-size", required_argument, NULL, OPT_STRIPE },
		{ "quorum", required_argument, NULL, OPT_QUORUM },
		{ "inline-max", required_argument, NULL, OPT_INLINE },
		{ "bucket", required_argument, NULL, OPT_BUCKET },
		{ "region", required_argument, NULL, OPT_REGION },
		{ "access-key", required_argument, NULL, OPT_ACCESS },
		{ "secret-key", required_argument, NULL, OPT_SECRET },
		{ "config", required_argument, NULL, OPT_CONFIG },
		{ "uuid", required_argument, NULL, OPT_UUID },
		{ "force", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct mkfs_settings cli = { 0 }, cfg = { 0 }, st;
	struct meta_superblock *sb = NULL;
	const char *config = NULL, *dir;
	char *config_buf = NULL;
	bool force = false, quiet = false;
	int c, r, rc = EXIT_FAILURE;

	tlog_set_ident(prog);
	while ((c = getopt_long(argc, argv, "fqh", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SERVER:
			if (cli.n_servers >= META_MAX_SERVERS)
				return usage_error("more than %d servers", META_MAX_SERVERS);
			cli.servers[cli.n_servers++] = optarg;
			break;
		case OPT_K: cli.k = optarg; break;
		case OPT_M: cli.m = optarg; break;
		case OPT_STRIPE: cli.stripe_size = optarg; break;
		case OPT_QUORUM: cli.quorum = optarg; break;
		case OPT_INLINE: cli.inline_max = optarg; break;
		case OPT_BUCKET: cli.bucket = optarg; break;
		case OPT_REGION: cli.region = optarg; break;
		case OPT_ACCESS: cli.access_key = optarg; break;
		case OPT_SECRET: cli.secret_key = optarg; break;
		case OPT_CONFIG: config = optarg; break;
		case OPT_UUID: cli.uuid = optarg; break;
		case 'f': force = true; break;
		case 'q': quiet = true; break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			fprintf(stderr, "Try '%s --help' for more information.\n", prog);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error("missing META_DIR");
	if (optind + 1 < argc)
		return usage_error("unexpected argument '%s'", argv[optind + 1]);
	dir = argv[optind];
	if (*dir == '\0')
		return usage_error("empty META_DIR");

	if (config) {
		r = config_read(config, &cfg, &config_buf);
		if (r)
			return r;
	}

	/* command line, then config file, then environment (keys only), then defaults */
	st = cli;
	if (!st.n_servers) {
		memcpy(st.servers, cfg.servers, sizeof(cfg.servers));
		st.n_servers = cfg.n_servers;
	}
#define MERGE(f, dflt) st.f = cli.f ? cli.f : cfg.f ? cfg.f : (dflt)
	MERGE(k, "4");
	MERGE(m, "2");
	MERGE(stripe_size, NULL);
	MERGE(quorum, NULL);
	MERGE(inline_max, NULL);
	MERGE(bucket, "tessera");
	MERGE(region, "us-east-1");
	MERGE(access_key, getenv("TESSERA_ACCESS_KEY"));
	MERGE(secret_key, getenv("TESSERA_SECRET_KEY"));
	MERGE(uuid, NULL);
#undef MERGE
	if (!st.access_key || !*st.access_key || !st.secret_key || !*st.secret_key) {
		rc = usage_error("the S3 keys are required: --access-key and --secret-key "
				 "(or TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY)");
		goto out;
	}
	if (!valid_key(st.access_key) || !valid_key(st.secret_key)) {
		rc = usage_error("invalid S3 key: 1..%d printable characters without spaces",
				 MKFS_KEY_MAX);
		goto out;
	}

	sb = calloc(1, sizeof(*sb));
	if (!sb) {
		rc = fail("out of memory");
		goto out;
	}
	rc = build_superblock(&st, sb);
	if (rc)
		goto out;

	r = meta_mkfs(dir, sb, (uint32_t)getuid(), (uint32_t)getgid(), force);
	if (r == -EEXIST) {
		rc = fail("'%s' already holds a filesystem; use --force to overwrite it", dir);
		goto out;
	}
	if (r == -EBUSY) {
		rc = fail("the filesystem in '%s' is in use (mounted?)", dir);
		goto out;
	}
	if (r < 0) {
		rc = fail("cannot create the filesystem in '%s': %s", dir, strerror(-r));
		goto out;
	}
	r = write_credentials(dir, st.access_key, st.secret_key);
	if (r < 0) {
		rc = fail("cannot write '%s/credentials': %s (the filesystem is not usable "
			  "without it; run again with --force)",
			  dir, strerror(-r));
		goto out;
	}
	if (!quiet)
		print_summary(dir, sb);
	rc = EXIT_SUCCESS;
out:
	free(sb);
	free(config_buf);
	return rc;
}
