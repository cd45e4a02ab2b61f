/*
 * common: logging, clocks, checksums, random bytes and small file helpers.
 *
 * The log level, ident and sink are process-wide and set at start-up (the level may change
 * later); tlog() writes one whole line per call (a single write, so lines from threads do not
 * interleave) to stderr, syslog or a log file. Nothing here keeps other state.
 */
#include "tessera/common.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>
#include <openssl/rand.h>

enum log_sink { LOG_SINK_STDERR, LOG_SINK_SYSLOG, LOG_SINK_FILE };

static _Atomic int log_level = -1;
static const char *log_ident = "tessera";
static _Atomic int log_sink = LOG_SINK_STDERR;
static int log_fd = -1;              /* LOG_SINK_FILE: replaced in place by tlog_reopen() */
static char log_path[PATH_MAX];

void tlog_set_level(enum tlog_level level)
{
	log_level = (int)level;
}

void tlog_set_ident(const char *ident)
{
	log_ident = ident;
}

int tlog_level_parse(const char *name, enum tlog_level *ret)
{
	static const struct { const char *name; enum tlog_level level; } names[] = {
		{ "error", TLOG_ERROR }, { "warning", TLOG_WARN }, { "warn", TLOG_WARN },
		{ "info", TLOG_INFO },   { "debug", TLOG_DEBUG },
	};

	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(names); i++) {
		if (strcmp(name, names[i].name) == 0) {
			*ret = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

void tlog_to_stderr(void)
{
	log_sink = LOG_SINK_STDERR;
}

void tlog_to_syslog(void)
{
	openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_sink = LOG_SINK_SYSLOG;
}

int tlog_to_file(const char *path)
{
	int fd;

	if (strlen(path) >= sizeof(log_path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (log_fd >= 0) {
		/* Replace the open descriptor in place, so a concurrent writer never sees it
		 * closed. */
		dup2(fd, log_fd);
		close(fd);
	} else {
		log_fd = fd;
	}
	snprintf(log_path, sizeof(log_path), "%s", path);
	log_sink = LOG_SINK_FILE;
	return 0;
}

void tlog_reopen(void)
{
	int fd;

	if (log_sink != LOG_SINK_FILE || log_fd < 0)
		return;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return; /* keep writing to the old file */
	dup2(fd, log_fd);
	close(fd);
}

void tlogv(enum tlog_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int priorities[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	int n = 0, sink = log_sink;

	if (log_level < 0) {
		const char *d = getenv("TESSERA_DEBUG");
		log_level = d && *d && strcmp(d, "0") ? TLOG_DEBUG : TLOG_INFO;
	}
	if ((int)level > log_level)
		return;
	if (sink == LOG_SINK_SYSLOG) {
		if (vsnprintf(line, sizeof(line), fmt, ap) >= 0)
			syslog(priorities[level], "%s: %s", names[level], line);
		return;
	}
	if (sink == LOG_SINK_FILE) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ld [%d] ",
			      ts.tv_nsec / 1000000, (int)getpid());
	}
	int r = snprintf(line + n, sizeof(line) - (size_t)n, "%s: %s: ", log_ident, names[level]);
	if (r < 0)
		return;
	n += r;
	r = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if (r < 0)
		return;
	n += r;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(sink == LOG_SINK_FILE ? log_fd : STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void tlog(enum tlog_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tlogv(level, fmt, ap);
	va_end(ap);
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t tclock_realtime_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

uint64_t tclock_monotonic_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

void tcond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

void tcond_wait_until(pthread_cond_t *c, pthread_mutex_t *l, uint64_t deadline_ns)
{
	struct timespec ts = { (time_t)(deadline_ns / 1000000000ull),
			       (long)(deadline_ns % 1000000000ull) };

	pthread_cond_timedwait(c, l, &ts);
}

uint32_t tcrc32c(uint32_t crc, const void *buf, size_t len)
{
	/* ISA-L's crc32_iscsi takes and returns the raw register; invert on the way in and
	 * out so that results match the standard crc32c (0xe3069283 for "123456789"). */
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	while (len > 0) {
		int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
		c = crc32_iscsi((unsigned char *)p, chunk, c);
		p += chunk;
		len -= (size_t)chunk;
	}
	return ~c;
}

void *tgrow(void *p, size_t *cap, size_t need, size_t elem, size_t initial)
{
	size_t ncap = *cap ? *cap : (initial ? initial : 1);

	if (need <= *cap && p)
		return p;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return NULL;
		ncap *= 2;
	}
	if (elem && ncap > SIZE_MAX / elem)
		return NULL;
	void *np = realloc(p, ncap * elem);
	if (!np)
		return NULL;
	*cap = ncap;
	return np;
}

int trandom_bytes(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len > 0) {
		int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
		if (RAND_bytes(p, chunk) != 1)
			return -EIO;
		p += chunk;
		len -= (size_t)chunk;
	}
	return 0;
}

void thex_encode(const uint8_t *buf, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[buf[i] >> 4];
		out[2 * i + 1] = hex[buf[i] & 15];
	}
	out[2 * len] = '\0';
}

void tuuid_format(const uint8_t uuid[16], char out[37])
{
	char hex[33];
	thex_encode(uuid, 16, hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
		 hex + 20);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int tuuid_parse(const char *s, uint8_t uuid[16])
{
	uint8_t out[16];
	size_t n = 0;

	if (strlen(s) != 36)
		return -EINVAL;
	for (size_t i = 0; i < 36;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	memcpy(uuid, out, 16);
	return 0;
}

int tfile_read_all(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		if (len + 1 >= cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			char *nb = realloc(buf, ncap);
			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = -EFBIG;
			goto out;
		}
	}
	buf[len] = '\0';
	*ret_buf = buf;
	if (ret_len)
		*ret_len = len;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

int tfsync_dir(const char *dirpath)
{
	int fd = open(dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

int tfile_write_atomic(const char *path, const void *buf, size_t len, unsigned mode)
{
	static atomic_uint seq;
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *p = buf;
	int fd, r = 0;

	/* pid and a per-process sequence number: concurrent writers of one path, in threads
	 * of one process too, each get their own temporary file. */
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%u", path, (int)getpid(),
		     atomic_fetch_add(&seq, 1)) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	return tfsync_dir(dirname(dir));
}

int tmkdir_p(const char *path, unsigned mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int tparse_u64(const char *s, const char **end, uint64_t *ret)
{
	char *e;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &e, 10);
	if (errno)
		return -ERANGE;
	*ret = v;
	*end = e;
	return 0;
}

int tparse_i64(const char *s, const char **end, int64_t *ret)
{
	bool neg = *s == '-';
	uint64_t v;
	int r = tparse_u64(s + neg, end, &v);

	if (r < 0 || v > (uint64_t)INT64_MAX + neg)
		return -EINVAL;
	*ret = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int thex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tparse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	const char *end;
	uint64_t v;

	if (!s)
		return -EINVAL;
	int r = tparse_u64(s, &end, &v);
	if (r < 0)
		return r;
	if (*end)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int tparse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	/* strtoull() would skip leading spaces and accept a sign (" -1" is UINT64_MAX). */
	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' || *end == 'B' || *end == 'b')
		end += (*end == 'i' && (end[1] == 'B' || end[1] == 'b')) ? 2 : 1;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	*ret = (uint64_t)v << shift;
	return 0;
}

/* Undoes the octal escapes (\\040 for a space...) of a /proc/self/mountinfo field in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int tmount_each(int (*fn)(void *ctx, const struct tmount_entry *e), void *ctx)
{
	char line[3 * PATH_MAX + 256];
	FILE *f;
	int r = 0;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	while (r == 0 && fgets(line, sizeof(line), f)) {
		/* id parent major:minor root mountpoint options [optional...] - fstype source ... */
		char majmin[64], mnt[PATH_MAX], fstype[128], source[PATH_MAX];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %63s %*s %4095s", majmin, mnt) != 2 ||
		    sscanf(dash + 3, "%127s %4095s", fstype, source) != 2)
			continue;
		unescape_mountinfo(mnt);
		unescape_mountinfo(source);
		struct tmount_entry e = { majmin, mnt, fstype, source };
		r = fn(ctx, &e);
	}
	fclose(f);
	return r;
}

struct mount_at_ctx {
	const char *want;
	bool found;
	char majmin[64], fstype[128], source[PATH_MAX];
};

static int mount_at_fn(void *ctx, const struct tmount_entry *e)
{
	struct mount_at_ctx *c = ctx;

	if (strcmp(e->mountpoint, c->want) == 0) { /* the last one is on top */
		c->found = true;
		snprintf(c->majmin, sizeof(c->majmin), "%s", e->majmin);
		snprintf(c->fstype, sizeof(c->fstype), "%s", e->fstype);
		snprintf(c->source, sizeof(c->source), "%s", e->source);
	}
	return 0;
}

static int mount_find(const char *path, struct mount_at_ctx *c)
{
	char want[PATH_MAX];
	int r;

	if (!realpath(path, want))
		return -errno;
	c->want = want;
	c->found = false;
	r = tmount_each(mount_at_fn, c);
	c->want = NULL;
	if (r < 0)
		return r;
	return c->found ? 0 : -ENOENT;
}

int tmount_at(const char *path, char *fstype, size_t fstype_size, char *source,
	      size_t source_size)
{
	struct mount_at_ctx c;
	int r = mount_find(path, &c);

	if (r < 0)
		return r;
	if (fstype)
		snprintf(fstype, fstype_size, "%s", c.fstype);
	if (source)
		snprintf(source, source_size, "%s", c.source);
	return 0;
}

int tmount_set_readahead(const char *mountpoint, unsigned kb)
{
	struct mount_at_ctx c;
	char path[PATH_MAX + 64], num[32];
	int r = mount_find(mountpoint, &c);

	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", c.majmin);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int n = snprintf(num, sizeof(num), "%u\n", kb);
	r = write(fd, num, (size_t)n) == n ? 0 : -errno;
	close(fd);
	return r;
}

uint64_t tjson_sum(const char *json, const char *name)
{
	char pat[64];
	uint64_t sum = 0;
	int n = snprintf(pat, sizeof(pat), "\"%s\":", name);

	if (n < 0 || (size_t)n >= sizeof(pat))
		return 0;
	for (const char *p = strstr(json, pat); p; p = strstr(p + n, pat)) {
		const char *q = p + n;
		while (*q == ' ')
			q++;
		sum += strtoull(q, NULL, 10);
	}
	return sum;
}

void tformat_bytes(uint64_t v, char *out, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double d = (double)v;
	int i = 0;

	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	snprintf(out, size, i ? "%.1f %s" : "%.0f %s", d, units[i]);
}


/* ---------------------------------------------------------------- string builder */

void tstr_init_fixed(struct tstr *s, char *buf, size_t size)
{
	*s = (struct tstr){ .buf = buf, .cap = size, .max = size, .fixed = true,
			    .failed = size == 0 };
	if (size)
		buf[0] = '\0';
}

void tstr_init(struct tstr *s, size_t max)
{
	*s = (struct tstr){ .max = max, .failed = max == 0 };
}

void tstr_free(struct tstr *s)
{
	if (!s->fixed)
		free(s->buf);
	s->buf = NULL;
	s->len = s->cap = 0;
}

/* Makes room for n more bytes and the NUL. */
static bool tstr_room(struct tstr *s, size_t n)
{
	if (s->failed)
		return false;
	if (s->len + n + 1 > s->max) {
		s->failed = true;
		return false;
	}
	if (s->len + n + 1 <= s->cap)
		return true;
	size_t cap = s->cap ? s->cap : 256;
	while (cap < s->len + n + 1)
		cap *= 2;
	if (cap > s->max)
		cap = s->max;
	char *b = s->fixed ? NULL : realloc(s->buf, cap);
	if (!b) {
		s->failed = true;
		return false;
	}
	s->buf = b;
	s->cap = cap;
	return true;
}

void tstr_append(struct tstr *s, const void *p, size_t n)
{
	if (!tstr_room(s, n))
		return;
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	s->buf[s->len] = '\0';
}

void tstr_puts(struct tstr *s, const char *str)
{
	tstr_append(s, str, strlen(str));
}

void tstr_printf(struct tstr *s, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	int n;

	if (s->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		s->failed = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		tstr_append(s, small, (size_t)n);
		return;
	}
	if (!tstr_room(s, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(s->buf + s->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
}

void tstr_json_str(struct tstr *s, const char *str)
{
	tstr_append(s, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		if (*p == '"' || *p == '\\')
			tstr_printf(s, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			tstr_printf(s, "\\u%04x", *p);
		else
			tstr_append(s, p, 1);
	}
	tstr_append(s, "\"", 1);
}
