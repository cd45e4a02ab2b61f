/*
 * tesserafs: the FUSE daemon.
 *
 *   tesserafs [-f] [-d] [-s] [-o opt[,opt...]] META_DIR MOUNTPOINT
 *
 * Our options (-o): request_timeout=SECONDS, connect_timeout_ms=MS, attr_timeout=SECONDS,
 * log=FILE, log_level=LEVEL, lock_wait=SECONDS and the data layer's settings (usage()).
 * Every other -o option goes to libfuse and the kernel (allow_other, default_permissions, ...).
 *
 * Detaching (without -f, as mount(8) and fstab start it): the process forks before it opens
 * anything. RocksDB, libcurl and the block client start threads, and threads do not survive
 * fork(): a child that inherits a thread pool's state waits at exit, forever, for threads that
 * ran only in the parent. So the parent starts nothing; the child opens the metadata, checks
 * the servers and mounts, with stderr still on the terminal, then tells the parent through a
 * pipe, and only then moves its log to syslog (or -o log=FILE) and leaves the terminal. The
 * parent exits with the child's verdict, so mount(8) sees a failed start as a failure.
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
#include <fcntl.h>
#include <signal.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/control.h"
#include "tessera/scrub.h"
#include "tessera/data.h"
#include "tessera/fs.h"
#include "tessera/journal.h"
#include "tessera/meta.h"
#include "tessera/proto.h"
#include "tessera/stripe.h"

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
	unsigned heal;          /* 0: no background repair */
	unsigned write_quorum;
	char *log_file;
	char *log_level;
	unsigned lock_wait_s;
	unsigned journal_interval;
	unsigned journal;       /* 0: no journal (a point-in-time view of a backup) */
	int takeover;
	int have_fsname;
	int have_subtype;
};

#define OPT(t, p) { t, offsetof(struct cmdline, p), 1 }
#define KEY_NUMBER 4

/* The numeric -o options, parsed by tparse_uint() (libfuse's %u would take "-1" as
 * UINT_MAX) and checked against their bounds. */
static const struct num_opt {
	const char *name;
	size_t off;
	unsigned min, max;
} num_opts[] = {
	{ "request_timeout", offsetof(struct cmdline, request_timeout), 1, 3600 },
	{ "connect_timeout_ms", offsetof(struct cmdline, connect_timeout_ms), 1, 600000 },
	{ "read_ahead_kb", offsetof(struct cmdline, read_ahead_kb), 0, 1u << 20 },
	{ "readahead_stripes", offsetof(struct cmdline, readahead_stripes), 0, DATA_FILE_BUFFERS },
	{ "workers", offsetof(struct cmdline, workers), 1, 64 },
	{ "hedge_ms", offsetof(struct cmdline, hedge_ms), 1, 600000 },
	{ "write_quorum", offsetof(struct cmdline, write_quorum), 1, META_MAX_SERVERS },
	{ "lock_wait", offsetof(struct cmdline, lock_wait_s), 0, 86400 },
	{ "heal", offsetof(struct cmdline, heal), 0, 1 },
	{ "journal_interval", offsetof(struct cmdline, journal_interval), 1, 60000 },
	{ "journal", offsetof(struct cmdline, journal), 0, 1 },
};

/* "name=value" of a numeric option into its field. 0, or -1 after saying what is wrong. */
static int num_opt_set(struct cmdline *c, const char *arg)
{
	const char *eq = strchr(arg, '=');
	uint64_t v;

	for (size_t i = 0; eq && i < TESSERA_ARRAY_SIZE(num_opts); i++) {
		const struct num_opt *o = &num_opts[i];
		if (strlen(o->name) != (size_t)(eq - arg) || memcmp(o->name, arg, eq - arg) != 0)
			continue;
		if (tparse_uint(eq + 1, o->min, o->max, &v) < 0) {
			fprintf(stderr, "tesserafs: bad %s '%s' (a whole number, %u..%u)\n", o->name,
				eq + 1, o->min, o->max);
			return -1;
		}
		*(unsigned *)((char *)c + o->off) = (unsigned)v;
		return 0;
	}
	fprintf(stderr, "tesserafs: unknown option '%s'\n", arg);
	return -1;
}
static const struct fuse_opt opt_spec[] = {
	OPT("-f", foreground),
	OPT("-s", single_thread),
	OPT("-h", help),
	OPT("--help", help),
	OPT("-V", version),
	OPT("--version", version),
	FUSE_OPT_KEY("request_timeout=", KEY_NUMBER),
	FUSE_OPT_KEY("connect_timeout_ms=", KEY_NUMBER),
	{ "attr_timeout=%s", offsetof(struct cmdline, attr_timeout), 0 },
	FUSE_OPT_KEY("read_ahead_kb=", KEY_NUMBER),
	FUSE_OPT_KEY("readahead_stripes=", KEY_NUMBER),
	FUSE_OPT_KEY("workers=", KEY_NUMBER),
	{ "inline_max=%s", offsetof(struct cmdline, inline_max), 0 },
	{ "buffer_budget=%s", offsetof(struct cmdline, buffer_budget), 0 },
	FUSE_OPT_KEY("hedge_ms=", KEY_NUMBER),
	FUSE_OPT_KEY("heal=", KEY_NUMBER),
	FUSE_OPT_KEY("write_quorum=", KEY_NUMBER),
	{ "log=%s", offsetof(struct cmdline, log_file), 0 },
	{ "log_level=%s", offsetof(struct cmdline, log_level), 0 },
	FUSE_OPT_KEY("lock_wait=", KEY_NUMBER),
	FUSE_OPT_KEY("journal_interval=", KEY_NUMBER),
	FUSE_OPT_KEY("journal=", KEY_NUMBER),
	OPT("takeover", takeover),
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
	if (key == KEY_NUMBER)
		return num_opt_set(c, arg);
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
		"  -o heal=0|1             rebuild degraded stripes in the background (default 1)\n"
		"  -o write_quorum=Q       fragments that must be stored (default: the filesystem's)\n"
		"  -o log=FILE             log to FILE (reopened on SIGHUP); detached, the default is\n"
		"                          syslog (facility daemon), in the foreground stderr\n"
		"  -o log_level=LEVEL      error, warning, info (default) or debug\n"
		"  -o journal_interval=MS  metadata changes reach the servers' journal within MS\n"
		"                          (default 1000; fsync waits for it always)\n"
		"  -o journal=0|1          the metadata journal on the servers (default 1); 0 mounts\n"
		"                          this directory as it is (a backup as backed up): no\n"
		"                          catch-up, no epoch claimed, changes not journaled\n"
		"  -o takeover             mount although a later epoch wrote the journal (this\n"
		"                          metadata directory is an old copy; its changes win)\n"
		"  -o lock_wait=S          wait up to S seconds for a previous daemon of META_DIR to\n"
		"                          release it (default 30; a mounted META_DIR is refused)\n"
		"  -o allow_other,default_permissions,...  passed to the kernel\n");
}

/* Forks; the parent waits for the child's verdict on a pipe and exits with it (0 once the
 * child reported that it is mounted, else the child's exit status). The child starts a new
 * session and gets the pipe's write end in *ret_fd. Returns 0 in the child, -errno when the
 * fork itself failed (nothing detached). */
static int detach_fork(int *ret_fd)
{
	int p[2], status;
	pid_t pid;
	char c;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		close(p[0]);
		setsid();
		*ret_fd = p[1];
		return 0;
	}
	close(p[1]);
	do
		n = read(p[0], &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1 && c == 0)
		_exit(0);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	_exit(WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
}

/* The detached child is mounted: the log leaves stderr, stdio goes to /dev/null, and the
 * parent is told (and exits). */
static void detach_done(int fd, bool log_file)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (!log_file)
		tlog_to_syslog();
	if (chdir("/") < 0)
		tlog_warn("cannot change to '/': %s", strerror(errno));
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	ssize_t w = write(fd, "", 1);
	(void)w;
	close(fd);
}

static void on_sighup(int sig)
{
	(void)sig;
	tlog_reopen();
}

/* ---------------------------------------------------------------- the daemon's parts */

struct daemon_config {
	unsigned request_timeout_s;  /* per block request; 0 = 10 s */
	unsigned connect_timeout_ms; /* 0 = 2000 */
	unsigned lock_wait_ms;
	struct journal_config journal;
	bool journal_off;
	struct data_config data;
	struct fs_options fs;
};

/* Everything a mount runs on, opened in this order and closed in the reverse one. */
struct daemon {
	const char *meta_dir;
	struct meta *meta;
	struct blockstore *bs;
	struct journal *journal;
	pthread_mutex_t inode_lock; /* shared by fs, data and the mounted scrubber */
	struct data *data;
	struct fs *fs;
	struct control *ctl;
	struct scrub_healer *healer;
};

struct mounted_ctx {
	const char *meta_dir;
	char mountpoint[PATH_MAX];
};

static int mounted_fn(void *ctx, const struct tmount_entry *e)
{
	struct mounted_ctx *c = ctx;

	if (strcmp(e->fstype, "fuse.tesserafs") != 0 || strcmp(e->source, c->meta_dir) != 0)
		return 0;
	snprintf(c->mountpoint, sizeof(c->mountpoint), "%s", e->mountpoint);
	return 1;
}

/* Opens the metadata. A held lock is waited for (up to wait_ms) when no mount of meta_dir is
 * listed: umount returns before the daemon that served the mount has closed the database, and
 * a new mount right after it must not fail. Logs why it fails. */
static int open_meta(const char *meta_dir, unsigned wait_ms, struct meta **ret)
{
	uint64_t deadline = tclock_monotonic_ns() + (uint64_t)wait_ms * 1000000u;
	bool said = false;
	int r;

	for (;;) {
		r = meta_open(meta_dir, ret);
		if (r != -EBUSY)
			break;
		struct mounted_ctx mc = { .meta_dir = meta_dir };
		if (tmount_each(mounted_fn, &mc) > 0) {
			tlog_error("metadata '%s' is already mounted on '%s'", meta_dir,
				   mc.mountpoint);
			return r;
		}
		if (tclock_monotonic_ns() >= deadline)
			break;
		if (!said) {
			tlog_info("metadata '%s' is in use by another process: waiting up to %u s "
				  "for it to finish", meta_dir, wait_ms / 1000);
			said = true;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	if (r == -ENOENT)
		tlog_error("'%s' holds no tesserafs filesystem (run tessera-mkfs)", meta_dir);
	else if (r == -EBUSY)
		tlog_error("metadata '%s' is in use by another process", meta_dir);
	else if (r < 0)
		tlog_error("cannot open metadata '%s': %s", meta_dir, strerror(-r));
	return r;
}

/* A server that refuses the key would fail every write to it: says so now, by name. */
static int check_access(struct daemon *dm)
{
	const struct meta_superblock *sb = meta_superblock(dm->meta);
	uint16_t refused[META_MAX_SERVERS];
	int why[META_MAX_SERVERS];
	size_t n = 0;
	int r = data_check_access(dm->data, refused, why, TESSERA_ARRAY_SIZE(refused), &n);

	if (r < 0) {
		tlog_error("cannot check the servers' access: %s", strerror(-r));
		return r;
	}
	for (size_t i = 0; i < n; i++) {
		const struct meta_server *sv = meta_server_find(sb, refused[i]);
		tlog_error("server %u (%s) %s (credentials '%s')", refused[i], sv ? sv->url : "?",
			   blockstore_refusal_str(why[i]), sb->credentials);
	}
	return n ? -EACCES : 0;
}

static bool host_in_use(void *ctx, uint64_t ino)
{
	return fs_inode_in_use(ctx, ino);
}

static void daemon_close(struct daemon *dm)
{
	scrub_healer_stop(dm->healer); /* a running pass is cancelled; its repairs committed */
	control_stop(dm->ctl); /* a running scrub is cancelled; its checkpoint stays */
	fs_free(dm->fs);
	data_free(dm->data); /* stores what is still buffered */
	journal_stop(dm->journal); /* stores the last records */
	blockstore_free(dm->bs);
	meta_close(dm->meta);
	pthread_mutex_destroy(&dm->inode_lock);
	memset(dm, 0, sizeof(*dm));
}

/* Opens the metadata, the block store, the data layer and the FUSE operations of meta_dir
 * (the control socket comes later, once mounted). Every failure is logged. */
static int daemon_open(struct daemon *dm, const char *meta_dir, const struct daemon_config *cfg)
{
	struct blockclient_config bcfg = {
		.request_timeout_ms = (cfg->request_timeout_s ? cfg->request_timeout_s : 10) * 1000,
		.connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000,
	};
	const struct meta_superblock *sb;
	int r;

	memset(dm, 0, sizeof(*dm));
	dm->meta_dir = meta_dir;
	pthread_mutex_init(&dm->inode_lock, NULL);
	r = open_meta(meta_dir, cfg->lock_wait_ms, &dm->meta);
	if (r < 0)
		goto fail;
	sb = meta_superblock(dm->meta);
	r = stripe_client_config(meta_dir, sb, &bcfg);
	if (r < 0) {
		if (r == -EINVAL)
			tlog_error("no usable access key (credentials '%s')", sb->credentials);
		else
			tlog_error("cannot read credentials '%s': %s", sb->credentials,
				   strerror(-r));
		goto fail;
	}
	r = stripe_store_new(sb, &bcfg, &dm->bs);
	if (r < 0) {
		tlog_error("cannot set up the block client: %s", strerror(-r));
		goto fail;
	}
	/* before anything commits: every change from here on is journaled */
	r = cfg->journal_off ? 0 : journal_start(dm->meta, dm->bs, &cfg->journal, &dm->journal);
	if (r < 0) {
		if (r != -ESTALE)
			tlog_error("cannot start the metadata journal: %s", strerror(-r));
		goto fail;
	}
	if (cfg->journal_off)
		tlog_warn("no metadata journal (-o journal=0): changes stay in '%s' only",
			  meta_dir);
	r = data_new(dm->meta, dm->bs, &dm->inode_lock, &cfg->data, &dm->data);
	if (r < 0) {
		tlog_error("cannot set up the data layer: %s", strerror(-r));
		goto fail;
	}
	r = check_access(dm);
	if (r < 0)
		goto fail;
	r = fs_new(dm->meta, dm->data, &dm->inode_lock, &cfg->fs, &dm->fs);
	if (r < 0) {
		tlog_error("cannot set up the filesystem: %s", strerror(-r));
		goto fail;
	}
	return 0;
fail:
	daemon_close(dm);
	return r;
}

static uint64_t heal_gen(void *ctx)
{
	return data_heal_generation(ctx);
}

/* The healer: flagged stripes rebuilt in the background (scrub/healer.c). */
static void daemon_healer(struct daemon *dm)
{
	struct scrub_healer_config hc = { .meta = dm->meta, .bs = dm->bs,
					  .meta_lock = &dm->inode_lock, .in_use = host_in_use,
					  .in_use_ctx = dm->fs, .work_gen = heal_gen,
					  .gen_ctx = dm->data };
	int r = scrub_healer_start(&hc, &dm->healer);

	if (r < 0)
		tlog_warn("no healer: %s (degraded stripes wait for tessera-scrub)", strerror(-r));
}

/* The control socket, for tessera-scrub and tessera on the mount point. */
static void daemon_control(struct daemon *dm)
{
	struct control_host host = { .meta = dm->meta, .bs = dm->bs,
				     .inode_lock = &dm->inode_lock, .in_use = host_in_use,
				     .ctx = dm->fs };
	int r = control_start(&host, dm->meta_dir, &dm->ctl);

	if (r < 0)
		tlog_warn("no control socket in '%s': %s (tessera-scrub cannot scrub this mount)",
			  dm->meta_dir, strerror(-r));
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline c = { .read_ahead_kb = 1024, .readahead_stripes = UINT_MAX,
			     .lock_wait_s = UINT_MAX, .heal = 1, .journal = 1 };
	struct daemon_config fo = { .fs.attr_timeout_s = -1 };
	struct daemon dm = { 0 };
	uint64_t sz;
	struct fuse_session *se = NULL;
	char *mount_opts = NULL;
	int ret = 1, r, ready_fd = -1;
	bool opened = false, served = false;

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
		fo.fs.attr_timeout_s = strtod(c.attr_timeout, &end);
		if (*end || fo.fs.attr_timeout_s < 0) {
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

	/* An absolute mount point: the detached daemon changes to "/", and the unmount after a
	 * failed start must still find the mount. */
	char *abs_mnt = realpath(c.mountpoint, NULL);
	if (!abs_mnt) {
		fprintf(stderr, "tesserafs: mount point '%s': %s%s\n", c.mountpoint, strerror(errno),
			errno == ENOTCONN ? " (a dead mount is there: fusermount3 -u it)" : "");
		goto out;
	}
	free(c.mountpoint);
	c.mountpoint = abs_mnt;

	if (c.log_level) {
		enum tlog_level lv;
		if (tlog_level_parse(c.log_level, &lv) < 0) {
			fprintf(stderr, "tesserafs: bad log_level '%s' (error, warning, info or "
				"debug)\n", c.log_level);
			ret = 2;
			goto out;
		}
		tlog_set_level(lv);
	}
	fo.lock_wait_ms = (c.lock_wait_s == UINT_MAX ? 30 : c.lock_wait_s) * 1000u;
	fo.journal.interval_ms = c.journal_interval;
	fo.journal.takeover = c.takeover;
	fo.journal_off = c.journal == 0;

	/* Nothing before this point starts a thread. */
	if (!c.foreground && (r = detach_fork(&ready_fd)) < 0) {
		fprintf(stderr, "tesserafs: cannot detach: %s\n", strerror(-r));
		goto out;
	}
	if (c.log_file) {
		r = tlog_to_file(c.log_file);
		if (r < 0) {
			fprintf(stderr, "tesserafs: cannot open log file '%s': %s\n", c.log_file,
				strerror(-r));
			goto out;
		}
	}

	/* Everything that can fail (metadata, credentials, servers refusing the key) fails here,
	 * before anything is mounted, with the messages on the terminal. */
	if (daemon_open(&dm, c.meta_dir, &fo) < 0)
		goto out;
	opened = true;
	se = fuse_session_new(&args, fs_ops(), sizeof(struct fuse_lowlevel_ops), dm.fs);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (c.log_file) {
		/* libfuse's SIGHUP ends the session; with a log file it reopens the file. */
		struct sigaction sa = { .sa_handler = on_sighup };
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART;
		sigaction(SIGHUP, &sa, NULL);
	}
	if (fuse_session_mount(se, c.mountpoint) != 0)
		goto out_signals;
	/* FUSE mounts get 128 KiB of readahead; a stripe-sized sequential read wants more. */
	if (c.read_ahead_kb && (r = tmount_set_readahead(c.mountpoint, c.read_ahead_kb)) < 0)
		tlog_info("cannot set read_ahead_kb of '%s': %s", c.mountpoint, strerror(-r));
	if (ready_fd >= 0) {
		detach_done(ready_fd, c.log_file != NULL);
		ready_fd = -1;
	}
	tlog_info("mounted '%s' on '%s'", c.meta_dir, c.mountpoint);
	daemon_control(&dm);
	if (c.heal)
		daemon_healer(&dm);
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
	served = true;
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	if (opened) {
		/* Stores what is still buffered, then closes RocksDB and joins every thread, so
		 * nothing is left running at exit and the next mount finds the lock free. */
		daemon_close(&dm);
		if (served)
			tlog_info("unmounted '%s' from '%s'", c.meta_dir, c.mountpoint);
	}
	fuse_opt_free_args(&args);
	free(c.meta_dir);
	free(c.mountpoint);
	free(c.attr_timeout);
	free(c.inline_max);
	free(c.buffer_budget);
	free(c.log_file);
	free(c.log_level);
	free(mount_opts);
	return ret;
}
