/*
 * common: logging, clocks, byte order and small helpers shared by every layer.
 *
 * Thread-safety: every function here is safe to call from any thread.
 * Library layers log at TLOG_DEBUG, except what a person must hear of even when no caller can
 * be told (written data lost, a server gone): that goes at TLOG_WARN or TLOG_ERROR.
 */
#ifndef TESSERA_COMMON_H
#define TESSERA_COMMON_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TESSERA_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TESSERA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TESSERA_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- logging ---- */

enum tlog_level { TLOG_ERROR = 0, TLOG_WARN = 1, TLOG_INFO = 2, TLOG_DEBUG = 3 };

/* Messages above this level are dropped. Default TLOG_INFO; TESSERA_DEBUG=1 in the
 * environment raises it to TLOG_DEBUG at the first log call. */
void tlog_set_level(enum tlog_level level);
/* Prefix for every line ("tessera-blockd"); the string is borrowed and must outlive logging. */
void tlog_set_ident(const char *ident);
/* The level of a name ("error", "warning" or "warn", "info", "debug"). 0 or -EINVAL. */
int tlog_level_parse(const char *name, enum tlog_level *ret);

/* Where lines go: stderr (the default, no timestamps), syslog (facility daemon, the ident as
 * syslog's ident, the level as its priority), or a file opened for appending, each line
 * prefixed with a local timestamp. tlog_to_file() keeps a copy of path for tlog_reopen().
 * Returns 0 or -errno (the sink is unchanged on failure). */
void tlog_to_stderr(void);
void tlog_to_syslog(void);
int tlog_to_file(const char *path);
/* Reopens the log file (after log rotation) in place: safe to call from a signal handler (it
 * uses only open, dup2 and close). A no-op unless the sink is a file. */
void tlog_reopen(void);
void tlog(enum tlog_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tlogv(enum tlog_level level, const char *fmt, va_list ap);

#define tlog_error(...) tlog(TLOG_ERROR, __VA_ARGS__)
#define tlog_warn(...) tlog(TLOG_WARN, __VA_ARGS__)
#define tlog_info(...) tlog(TLOG_INFO, __VA_ARGS__)
#define tlog_debug(...) tlog(TLOG_DEBUG, __VA_ARGS__)

/* ---- clocks (nanoseconds) ---- */

uint64_t tclock_realtime_ns(void);  /* CLOCK_REALTIME */
uint64_t tclock_monotonic_ns(void); /* CLOCK_MONOTONIC */

/* A condition variable whose timed waits run on CLOCK_MONOTONIC (immune to clock steps). */
void tcond_init_monotonic(pthread_cond_t *c);
/* Waits on c (initialised by tcond_init_monotonic()) until signalled or until deadline_ns of
 * tclock_monotonic_ns(); l held. */
void tcond_wait_until(pthread_cond_t *c, pthread_mutex_t *l, uint64_t deadline_ns);

/* ---- fixed-width big-endian integers (metadata keys, fragment headers) ---- */

static inline void be_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void be_put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline void be_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline uint16_t be_get16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t be_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = v << 8 | p[i];
	return v;
}
static inline uint64_t be_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* ---- checksums ---- */

/* crc32c (Castagnoli) of buf, continuing from crc (start with 0). ISA-L's crc32_iscsi. */
uint32_t tcrc32c(uint32_t crc, const void *buf, size_t len);

/* ---- misc ---- */

/* Array growth: returns p reallocated to hold at least `need` elements of elem bytes, the
 * capacity (*cap, in elements) doubled from max(*cap, initial) until it does, or p itself when
 * *cap already suffices. Returns NULL when out of memory (p and *cap untouched: p is still
 * the caller's). Usage: t = tgrow(a, &cap, n + 1, sizeof(*a), 64); if (!t) fail; a = t; */
void *tgrow(void *p, size_t *cap, size_t need, size_t elem, size_t initial);

/* Writes 16 random bytes (OpenSSL RAND_bytes). Returns 0 or -EIO. */
int trandom_bytes(void *buf, size_t len);
/* Formats a 16-byte uuid as 36 characters plus NUL into out (37 bytes). */
void tuuid_format(const uint8_t uuid[16], char out[37]);
/* Parses the 36-character form. Returns 0 or -EINVAL. */
int tuuid_parse(const char *s, uint8_t uuid[16]);
/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void thex_encode(const uint8_t *buf, size_t len, char *out);

/* Reads a whole file of at most max bytes into a malloc'd NUL-terminated buffer
 * (*ret_buf, free with free()); returns 0, -errno, or -EFBIG when larger than max. */
int tfile_read_all(const char *path, size_t max, char **ret_buf, size_t *ret_len);
/* Writes buf to path atomically and durably: temp file, fsync, rename, fsync dir.
 * mode for the new file. Returns 0 or -errno. */
int tfile_write_atomic(const char *path, const void *buf, size_t len, unsigned mode);
/* fsync the directory that contains path (or path itself when it is a directory). */
int tfsync_dir(const char *dirpath);
/* mkdir -p with mode; existing directories are fine. Returns 0 or -errno. */
int tmkdir_p(const char *path, unsigned mode);

/* ---- /proc/self/mountinfo ---- */

/* One mount, its fields unescaped (\040 for a space...); valid only during the callback. */
struct tmount_entry {
	const char *majmin;     /* "0:52" */
	const char *mountpoint; /* absolute path */
	const char *fstype;     /* "fuse.tesserafs" */
	const char *source;     /* "/srv/meta" */
};
/* Calls fn for each mount, in the order the kernel lists them (a mount listed later is on top
 * of an earlier one at the same mount point), until fn returns non-zero. Returns fn's last
 * result, 0, or -errno when mountinfo cannot be read. */
int tmount_each(int (*fn)(void *ctx, const struct tmount_entry *e), void *ctx);
/* The topmost mount at path (resolved with realpath()): its fstype and source copied into
 * the buffers (either may be NULL). Returns 0, -ENOENT (nothing mounted exactly there), or
 * -errno. */
int tmount_at(const char *path, char *fstype, size_t fstype_size, char *source,
	      size_t source_size);

/* Sets the kernel readahead (KiB) of the filesystem mounted at mountpoint, by writing
 * /sys/class/bdi/MAJOR:MINOR/read_ahead_kb for the mount found in /proc/self/mountinfo
 * (no access to the mount itself, so it is safe before the filesystem answers).
 * Returns 0, -ENOENT (not mounted), or -errno of the write (e.g. -EACCES when not root). */
int tmount_set_readahead(const char *mountpoint, unsigned kb);

/* ---- a bounded string builder ---- */

/* Text built by appending, always NUL-terminated, never longer than its bound: either a
 * caller's fixed array (tstr_init_fixed) or a malloc'd buffer that grows up to max bytes
 * (tstr_init; free with tstr_free()). An append that does not fit (or finds no memory) sets
 * failed and is dropped, as is every later one: check failed once at the end. */
struct tstr {
	char *buf;
	size_t len;   /* bytes before the NUL */
	size_t cap;   /* bytes of buf */
	size_t max;   /* the bound of len + 1 */
	bool fixed;   /* buf is the caller's */
	bool failed;
};
void tstr_init_fixed(struct tstr *s, char *buf, size_t size);
void tstr_init(struct tstr *s, size_t max);
void tstr_free(struct tstr *s);
void tstr_append(struct tstr *s, const void *p, size_t n);
void tstr_puts(struct tstr *s, const char *str);
void tstr_printf(struct tstr *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends str as a JSON string: quoted, with " \ and control characters escaped (bytes of
 * 0x80 and above are passed through, as UTF-8 is). */
void tstr_json_str(struct tstr *s, const char *str);

/* Writes v as a size for people ("512 B", "1.5 GiB", up to TiB) into out. */
void tformat_bytes(uint64_t v, char *out, size_t size);

/* Sums every `"name":NUMBER` in a JSON text: good enough for blockd's /-/status document,
 * where per-directory figures (capacity, free) add up to the server's. */
uint64_t tjson_sum(const char *json, const char *name);

/* Parses the decimal number at the start of s (a digit must come first: no sign, no space) and
 * sets *end past it. Returns 0, -EINVAL (no digit) or -ERANGE (more than 64 bits). */
int tparse_u64(const char *s, const char **end, uint64_t *ret);

/* The same for a signed number: an optional '-' before the first digit. */
int tparse_i64(const char *s, const char **end, int64_t *ret);

/* The value of a hex digit (either case), or -1. */
int thex_digit(char c);

/* The one parser of numeric options: s must be a whole decimal number (digits only: no sign,
 * no space, nothing after it) within [min, max]. Returns 0, or -EINVAL (not a number: also
 * "-1", which strtoul would take as ULONG_MAX) or -ERANGE (outside the bounds, or more than
 * 64 bits). */
int tparse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* Parses sizes such as "4M", "64k", "1G", "512" (binary units). 0 or -EINVAL. */
int tparse_size(const char *s, uint64_t *ret);

#endif
