/*
 * tessera meta restore: a metadata directory rebuilt from the block servers alone.
 *
 *   tessera meta restore --server URL [--server URL]... --credentials FILE
 *                        [--uuid UUID] [--bucket B] [--region R] NEW_META_DIR
 *
 * The servers' journal (src/journal) holds checkpoints and the records after them; the newest
 * complete checkpoint and every record after it that the servers hold intact are applied into
 * NEW_META_DIR (journal_restore()), the credentials file is copied in when the superblock names
 * one relative to the metadata directory, and the result is opened as tesserafs would. --uuid
 * may be left out when the servers hold one filesystem. Mounting the new directory claims the
 * next epoch.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/journal.h"
#include "tessera/meta.h"

#include "cli.h"
#include "restore.h"

#define MAX_URLS 256

static const struct cli_style *style;
#define usage_error(...) cli_usage_error(style, __VA_ARGS__)
#define fail(...) cli_fail(style, __VA_ARGS__)

/* Copies the credentials file into the restored directory when its superblock names one there. */
static int copy_credentials(const char *dir, const char *cred_file)
{
	struct meta *meta;
	char *buf = NULL, path[PATH_MAX];
	size_t len;
	int r = meta_open(dir, &meta);

	if (r < 0)
		return fail("the restored metadata does not open: %s", strerror(-r));
	const struct meta_superblock *sb = meta_superblock(meta);
	if (strncmp(sb->credentials, "file:", 5) != 0 || sb->credentials[5] == '/') {
		printf("credentials: '%s' (as the filesystem names them; not copied)\n",
		       sb->credentials);
		meta_close(meta);
		return 0;
	}
	if (snprintf(path, sizeof(path), "%s/%s", dir, sb->credentials + 5) >= (int)sizeof(path)) {
		meta_close(meta);
		return fail("credentials path too long");
	}
	meta_close(meta);
	r = tfile_read_all(cred_file, 4096, &buf, &len);
	if (r == 0)
		r = tfile_write_atomic(path, buf, len, 0600);
	free(buf);
	if (r < 0)
		return fail("cannot copy the credentials to '%s': %s", path, strerror(-r));
	return 0;
}

int restore_main(const struct cli_style *st, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "credentials", required_argument, NULL, 'c' },
		{ "uuid", required_argument, NULL, 'u' },
		{ "bucket", required_argument, NULL, 'b' },
		{ "region", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *urls[MAX_URLS], *cred = NULL, *uuid_s = NULL;
	struct blockclient_config cfg = { .bucket = "tessera", .region = "us-east-1",
					  .request_timeout_ms = 30000 };
	uint16_t ids[MAX_URLS];
	size_t n = 0;
	uint8_t uuid[16];
	int c, r;

	style = st;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (n == MAX_URLS)
				return usage_error("at most %d servers", MAX_URLS);
			ids[n] = (uint16_t)n;
			urls[n++] = optarg;
			break;
		case 'c':
			cred = optarg;
			break;
		case 'u':
			uuid_s = optarg;
			break;
		case 'b':
		case 'r': {
			char *f = c == 'b' ? cfg.bucket : cfg.region;
			size_t sz = c == 'b' ? sizeof(cfg.bucket) : sizeof(cfg.region);
			if (strlen(optarg) == 0 || strlen(optarg) >= sz)
				return usage_error("bad --%s '%s'", c == 'b' ? "bucket" : "region",
						   optarg);
			snprintf(f, sz, "%s", optarg);
			break;
		}
		default:
			return usage_error("invalid option");
		}
	}
	if (optind != argc - 1)
		return usage_error("'meta restore' takes one NEW_META_DIR");
	if (n == 0)
		return usage_error("'meta restore' needs --server URL (every server you can reach)");
	if (!cred)
		return usage_error("'meta restore' needs --credentials FILE (\"ACCESS SECRET\")");
	if (uuid_s && tuuid_parse(uuid_s, uuid) < 0)
		return usage_error("bad --uuid '%s'", uuid_s);
	const char *dir = argv[optind];

	/* the key pair, read as the daemon reads a "file:" credentials entry */
	struct meta_superblock *ksb = calloc(1, sizeof(*ksb));
	if (!ksb)
		return fail("out of memory");
	snprintf(ksb->credentials, sizeof(ksb->credentials), "file:%s", cred);
	r = meta_load_credentials(".", ksb, cfg.access_key, sizeof(cfg.access_key), cfg.secret_key,
				  sizeof(cfg.secret_key));
	free(ksb);
	if (r < 0)
		return fail("cannot read credentials '%s': %s", cred,
			    r == -EINVAL ? "no \"ACCESS SECRET\" pair" : strerror(-r));
	for (size_t i = 0; i < n; i++) {
		struct meta_server sv;
		char err[200];
		if (meta_server_parse(urls[i], &sv, err, sizeof(err)) < 0)
			return usage_error("bad --server '%s': %s", urls[i], err);
	}
	struct blockstore *bs;
	r = blockstore_client_new(&cfg, ids, urls, n, &bs);
	explicit_bzero(cfg.secret_key, sizeof(cfg.secret_key));
	if (r < 0)
		return fail("cannot set up the block client: %s", strerror(-r));

	int rc = 0;
	if (!uuid_s) {
		uint8_t found[8][16];
		r = journal_list_filesystems(bs, ids, n, found, 8);
		if (r < 0) {
			rc = fail("no server answered (is --server right, and the key?)");
			goto out;
		}
		if (r == 0) {
			rc = fail("the servers hold no filesystem journal (bucket '%s')", cfg.bucket);
			goto out;
		}
		if (r > 1) {
			char u[37];
			fprintf(stderr, "%s: the servers hold %d filesystems; choose one with --uuid:\n",
				st->prog, r);
			for (int i = 0; i < r && i < 8; i++) {
				tuuid_format(found[i], u);
				fprintf(stderr, "  %s\n", u);
			}
			rc = st->usage_code;
			goto out;
		}
		memcpy(uuid, found[0], 16);
	}
	struct journal_restore_info info;
	char err[512], u[37];
	tuuid_format(uuid, u);
	r = journal_restore(bs, ids, n, uuid, dir, &info, err, sizeof(err));
	if (r < 0) {
		rc = fail("cannot restore filesystem %s into '%s': %s", u, dir,
			  err[0] ? err : strerror(-r));
		goto out;
	}
	rc = copy_credentials(dir, cred);
	if (rc != 0)
		goto out;
	char when[64] = "?";
	time_t t = (time_t)(info.ckpt_time_ns / 1000000000ull);
	struct tm tm;
	if (info.ckpt_time_ns && gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("restored filesystem %s into %s\n", u, dir);
	printf("checkpoint: record %llu (written %s)\n", (unsigned long long)info.ckpt_seq, when);
	printf("journal: %llu records from %llu segments applied after it\n",
	       (unsigned long long)info.records, (unsigned long long)info.segments);
	printf("position: epoch %llu, record %llu\n", (unsigned long long)info.epoch,
	       (unsigned long long)info.seq);
	if (info.stop[0])
		printf("stopped early: %s (the records after it are not restored)\n", info.stop);
out:
	blockstore_free(bs);
	return rc;
}
