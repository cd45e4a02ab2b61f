/*
 * tesserafs: the FUSE daemon.
 *
 *   tesserafs [-f] [-d] [-s] [-o opt[,opt...]] META_DIR MOUNTPOINT
 *
 * Our options (-o): request_timeout=SECONDS, connect_timeout_ms=MS, attr_timeout=SECONDS.
 * Every other -o option goes to libfuse and the kernel (allow_other, default_permissions, ...).
 * Also usable from mount(8) and fstab as type fuse.tesserafs (META_DIR as the device).
 * Unless -o fsname=/subtype= are given, the mount shows META_DIR as its source and
 * fuse.tesserafs as its type (tessera-scrub finds the control socket, META_DIR/control.sock,
 * from the source: control.h).
 */
/* 3.12: fuse_session_loop_mt() takes the fuse_loop_cfg_*() object. Below 3.12 it expects the
 * old public struct and misreads this one (clone_fd on, no idle thread kept): a new thread
 * and /dev/fuse clone per request. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/blockclient.h"
#include "tessera/common.h"
#include "tessera/control.h"
#include "tessera/fs.h"
#include "tessera/meta.h"
#include "tessera/proto.h"

struct cmdline {
	char *meta_dir;
	char *mountpoint;
	int foreground;
	int debug;
	int single_thread;
	int help;
	int version;
	unsigned request_timeout;
	unsigned connect_timeout_ms;
	char *attr_timeout;
	unsigned read_ahead_kb;
	unsigned readahead_stripes;
	unsigned workers;
	char *inline_max;
	char *buffer_budget;
	unsigned hedge_ms;
	unsigned write_quorum;
	int have_fsname;
	int have_subtype;
};

#define OPT(t, p) { t, offsetof(struct cmdline, p), 1 }
static const struct fuse_opt opt_spec[] = {
	OPT("-f", foreground),
	OPT("-s", single_thread),
	OPT("-h", help),
	OPT("--help", help),
	OPT("-V", version),
	OPT("--version", version),
	{ "request_timeout=%u", offsetof(struct cmdline, request_timeout), 0 },
	{ "connect_timeout_ms=%u", offsetof(struct cmdline, connect_timeout_ms), 0 },
	{ "attr_timeout=%s", offsetof(struct cmdline, attr_timeout), 0 },
	{ "read_ahead_kb=%u", offsetof(struct cmdline, read_ahead_kb), 0 },
	{ "readahead_stripes=%u", offsetof(struct cmdline, readahead_stripes), 0 },
	{ "workers=%u", offsetof(struct cmdline, workers), 0 },
	{ "inline_max=%s", offsetof(struct cmdline, inline_max), 0 },
	{ "buffer_budget=%s", offsetof(struct cmdline, buffer_budget), 0 },
	{ "hedge_ms=%u", offsetof(struct cmdline, hedge_ms), 0 },
	{ "write_quorum=%u", offsetof(struct cmdline, write_quorum), 0 },
	FUSE_OPT_KEY("fsname=", 2),
	FUSE_OPT_KEY("subtype=", 3),
	FUSE_OPT_KEY("-d", 1),
	FUSE_OPT_KEY("debug", 1),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cmdline *c = data;

	if (key == 1) {
		c->debug = 1;
		c->foreground = 1;
		return 1; /* libfuse prints requests too */
	}
	if (key == 2 || key == 3) {
		*(key == 2 ? &c->have_fsname : &c->have_subtype) = 1;
		return 1; /* kept for libfuse */
	}
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (!c->meta_dir) {
		c->meta_dir = realpath(arg, NULL);
		if (!c->meta_dir) {
			fprintf(stderr, "tesserafs: bad metadata directory '%s': %s\n", arg,
				strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!c->mountpoint) {
		c->mountpoint = strdup(arg);
		return c->mountpoint ? 0 : -1;
	}
	fprintf(stderr, "tesserafs: unexpected argument '%s'\n", arg);
	return -1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: tesserafs [options] META_DIR MOUNTPOINT\n"
		"\n"
		"  -f                      stay in the foreground\n"
		"  -d, -o debug            print every FUSE request (implies -f)\n"
		"  -s                      single-threaded\n"
		"  -o request_timeout=S    seconds per block-server request (default 10)\n"
		"  -o connect_timeout_ms=M milliseconds to connect to a block server (default 2000)\n"
		"  -o attr_timeout=S       kernel attribute and entry cache (default 1)\n"
		"  -o read_ahead_kb=K      kernel readahead of the mount (default 1024; 0: leave)\n"
		"  -o readahead_stripes=N  stripes prefetched for a sequential reader (default 4)\n"
		"  -o workers=N            background store/prefetch threads (default 8)\n"
		"  -o inline_max=SIZE      files up to SIZE live in the metadata (default: the\n"
		"                          filesystem's, tessera-mkfs --inline-max)\n"
		"  -o buffer_budget=SIZE   stripe buffers over all open files (default 256M)\n"
		"  -o hedge_ms=MS          read around a data fragment slower than this (default 2000)\n"
		"  -o write_quorum=Q       fragments that must be stored (default: the filesystem's)\n"
		"  -o allow_other,default_permissions,...  passed to the kernel\n");
}

/* Before detaching: asks every active server, with a signed HEAD of a key that does not
 * exist, whether it takes the key (a 403 would fail every write to it later, out of sight of
 * the terminal). Servers that do not answer are not an error here. Returns 0 or -EACCES. */
static int check_key(const struct meta_superblock *sb, const char *ak, const char *sk,
		     unsigned connect_timeout_ms)
{
	struct blockclient_config cfg = { .connect_timeout_ms = connect_timeout_ms ?
								connect_timeout_ms : 2000,
					  .request_timeout_ms = 5000 };
	uint16_t ids[META_MAX_SERVERS];
	const char *urls[META_MAX_SERVERS];
	bool refused[META_MAX_SERVERS];
	char key[PROTO_KEY_MAX];
	struct blockclient *bc;
	size_t n = 0;
	int r;

	snprintf(cfg.bucket, sizeof(cfg.bucket), "%s", sb->bucket);
	snprintf(cfg.region, sizeof(cfg.region), "%s", sb->region);
	snprintf(cfg.access_key, sizeof(cfg.access_key), "%s", ak);
	snprintf(cfg.secret_key, sizeof(cfg.secret_key), "%s", sk);
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		if (sb->servers[i].flags & META_SERVER_F_RETIRED)
			continue;
		ids[n] = sb->servers[i].id;
		urls[n++] = sb->servers[i].url;
	}
	r = blockclient_new(&cfg, ids, urls, n, &bc);
	memset(&cfg, 0, sizeof(cfg));
	if (r < 0)
		return 0; /* the daemon will report it */
	proto_access_key(key, sizeof(key), sb->fs_uuid);
	r = blockclient_check_access(bc, ids, n, key, refused);
	blockclient_free(bc); /* its thread is gone before the fork */
	for (size_t i = 0; r > 0 && i < n; i++)
		if (refused[i])
			fprintf(stderr, "tesserafs: server %u (%s) refuses the filesystem's access "
				"key (credentials '%s')\n", ids[i], urls[i], sb->credentials);
	return r > 0 ? -EACCES : 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline c = { .read_ahead_kb = 1024, .readahead_stripes = UINT_MAX };
	struct fs_options fo = { .attr_timeout_s = -1 };
	uint64_t sz;
	struct fuse_session *se = NULL;
	struct fs *fs = NULL;
	struct control *ctl = NULL;
	char *mount_opts = NULL;
	int ret = 1, r;

	tlog_set_ident("tesserafs");
	if (fuse_opt_parse(&args, &c, opt_spec, opt_proc) == -1)
		return 2;
	if (c.help) {
		usage(stdout);
		ret = 0;
		goto out;
	}
	if (c.version) {
		printf("tesserafs %s (libfuse %s)\n", TESSERA_VERSION, fuse_pkgversion());
		ret = 0;
		goto out;
	}
	if (!c.meta_dir || !c.mountpoint) {
		usage(stderr);
		ret = 2;
		goto out;
	}
	fo.request_timeout_s = c.request_timeout;
	fo.connect_timeout_ms = c.connect_timeout_ms;
	if (c.attr_timeout) {
		char *end;
		fo.attr_timeout_s = strtod(c.attr_timeout, &end);
		if (*end || fo.attr_timeout_s < 0) {
			fprintf(stderr, "tesserafs: bad attr_timeout '%s'\n", c.attr_timeout);
			ret = 2;
			goto out;
		}
	}
	data_config_defaults(&fo.data);
	if (c.readahead_stripes != UINT_MAX)
		fo.data.readahead = c.readahead_stripes;
	if (c.workers)
		fo.data.workers = c.workers;
	if (c.hedge_ms)
		fo.data.hedge_ms = c.hedge_ms;
	fo.data.write_quorum = c.write_quorum;
	if (c.inline_max) {
		if (tparse_size(c.inline_max, &sz) < 0 || sz > META_INLINE_MAX) {
			fprintf(stderr, "tesserafs: bad inline_max '%s' (at most %u)\n", c.inline_max,
				META_INLINE_MAX);
			ret = 2;
			goto out;
		}
		fo.data.inline_max = (uint32_t)sz;
	}
	if (c.buffer_budget) {
		if (tparse_size(c.buffer_budget, &sz) < 0) {
			fprintf(stderr, "tesserafs: bad buffer_budget '%s'\n", c.buffer_budget);
			ret = 2;
			goto out;
		}
		fo.data.buffer_budget = sz;
	}
	if (c.debug)
		tlog_set_level(TLOG_DEBUG);
	/* The mount's source is META_DIR: the way tessera-scrub MOUNTPOINT finds the daemon. */
	char *fsname = NULL;
	if (!c.have_fsname && asprintf(&fsname, "fsname=%s", c.meta_dir) < 0)
		goto out;
	r = fsname ? fuse_opt_add_opt_escaped(&mount_opts, fsname) : 0;
	free(fsname);
	if (r != 0 || (!c.have_subtype && fuse_opt_add_opt(&mount_opts, "subtype=tesserafs") != 0) ||
	    (mount_opts && (fuse_opt_add_arg(&args, "-o") != 0 ||
			    fuse_opt_add_arg(&args, mount_opts) != 0)))
		goto out;

	/* An absolute mount point: fuse_daemonize() changes to "/" even in the foreground, and
	 * the unmount after a failed start must still find the mount. */
	char *abs_mnt = realpath(c.mountpoint, NULL);
	if (!abs_mnt) {
		fprintf(stderr, "tesserafs: mount point '%s': %s%s\n", c.mountpoint, strerror(errno),
			errno == ENOTCONN ? " (a dead mount is there: fusermount3 -u it)" : "");
		goto out;
	}
	free(c.mountpoint);
	c.mountpoint = abs_mnt;

	fs = fs_alloc();
	if (!fs)
		goto out;
	if (c.foreground) {
		/* Everything that can fail (metadata, credentials, servers refusing the key) fails
		 * here, before anything is mounted. */
		if (fs_open(fs, c.meta_dir, &fo) < 0)
			goto out;
	} else {
		/* Check the metadata and the key before detaching, so that errors reach the
		 * terminal; RocksDB's threads do not survive fork(), so the daemon opens it again
		 * afterwards. */
		struct meta *m;
		char ak[128], sk[128];
		r = meta_open(c.meta_dir, &m);
		if (r < 0) {
			fprintf(stderr, "tesserafs: cannot open metadata '%s': %s\n", c.meta_dir,
				r == -ENOENT ? "no filesystem (run tessera-mkfs)" : strerror(-r));
			goto out;
		}
		r = meta_load_credentials(c.meta_dir, meta_superblock(m), ak, sizeof(ak), sk,
					  sizeof(sk));
		if (r < 0)
			fprintf(stderr, "tesserafs: no usable access key (credentials '%s'): %s\n",
				meta_superblock(m)->credentials,
				r == -EINVAL ? "no key pair" : strerror(-r));
		else
			r = check_key(meta_superblock(m), ak, sk, fo.connect_timeout_ms);
		memset(ak, 0, sizeof(ak));
		memset(sk, 0, sizeof(sk));
		meta_close(m);
		if (r < 0)
			goto out;
	}
	se = fuse_session_new(&args, fs_ops(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, c.mountpoint) != 0)
		goto out_signals;
	/* FUSE mounts get 128 KiB of readahead; a stripe-sized sequential read wants more. */
	if (c.read_ahead_kb && (r = tmount_set_readahead(c.mountpoint, c.read_ahead_kb)) < 0)
		tlog_info("cannot set read_ahead_kb of '%s': %s", c.mountpoint, strerror(-r));
	if (fuse_daemonize(c.foreground) != 0)
		goto out_unmount;

	if (!c.foreground && fs_open(fs, c.meta_dir, &fo) < 0)
		goto out_unmount;
	tlog_info("mounted '%s' on '%s'", c.meta_dir, c.mountpoint);
	r = control_start(fs, c.meta_dir, &ctl);
	if (r < 0)
		tlog_warn("no control socket in '%s': %s (tessera-scrub cannot scrub this mount)",
			  c.meta_dir, strerror(-r));
	if (c.single_thread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, 0);
		fuse_loop_cfg_set_max_threads(lc, 16);
		fuse_loop_cfg_set_idle_threads(lc, 8);
		ret = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	ret = ret != 0 ? 1 : 0;
	control_stop(ctl); /* a running scrub is cancelled; its checkpoint stays */
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	fs_free(fs);
	fuse_opt_free_args(&args);
	free(c.meta_dir);
	free(c.mountpoint);
	free(c.attr_timeout);
	free(c.inline_max);
	free(c.buffer_budget);
	free(mount_opts);
	return ret;
}
