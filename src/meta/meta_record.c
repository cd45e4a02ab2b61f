/*
 * meta records: the byte layout of every key and value the metadata store writes.
 *
 * Keys are fixed-width big-endian integers, optionally followed by a name, so that RocksDB's
 * bytewise order is numeric order: a directory's entries and a file's stripes are contiguous
 * and sorted. Values are small binary records whose first byte is a record version; a later
 * format adds a new version and keeps decoding the old one.
 *
 * Decoders treat their input as untrusted (a damaged database, a bit flip that RocksDB's block
 * checksum missed, a newer tool): every length is checked before it is used, and anything short,
 * long or inconsistent is -EBADMSG. Encoders never fail for valid records and write nothing when
 * the output buffer is too small.
 *
 * Pure functions, no state, no locks: safe from any thread.
 */
#include "meta_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"

/* ---- keys ---- */

size_t meta_dentry_key(uint8_t *out, uint64_t parent, const char *name, size_t name_len)
{
	be_put64(out, parent);
	if (name_len)
		memcpy(out + 8, name, name_len);
	return 8 + name_len;
}

void meta_stripe_key(uint8_t out[16], uint64_t ino, uint64_t stripe)
{
	be_put64(out, ino);
	be_put64(out + 8, stripe);
}

/* ---- inode: version(1) ino(8) mode uid gid nlink(4 each) size rdev atime mtime ctime btime
 * generation(8 each) flags(4) = 85 bytes ---- */

size_t meta_inode_encode(const struct meta_inode *in, uint8_t *out, size_t size)
{
	uint8_t *p = out;

	if (size < META_INODE_ENC_SIZE)
		return META_INODE_ENC_SIZE;
	*p++ = META_REC_INODE_V1;
	be_put64(p, in->ino), p += 8;
	be_put32(p, in->mode), p += 4;
	be_put32(p, in->uid), p += 4;
	be_put32(p, in->gid), p += 4;
	be_put32(p, in->nlink), p += 4;
	be_put64(p, in->size), p += 8;
	be_put64(p, in->rdev), p += 8;
	be_put64(p, in->atime_ns), p += 8;
	be_put64(p, in->mtime_ns), p += 8;
	be_put64(p, in->ctime_ns), p += 8;
	be_put64(p, in->btime_ns), p += 8;
	be_put64(p, in->generation), p += 8;
	be_put32(p, in->flags), p += 4;
	return (size_t)(p - out);
}

int meta_inode_decode(const uint8_t *buf, size_t len, struct meta_inode *ret)
{
	struct meta_inode in;
	const uint8_t *p = buf;

	if (len != META_INODE_ENC_SIZE || buf[0] != META_REC_INODE_V1)
		return -EBADMSG;
	p++;
	in.ino = be_get64(p), p += 8;
	in.mode = be_get32(p), p += 4;
	in.uid = be_get32(p), p += 4;
	in.gid = be_get32(p), p += 4;
	in.nlink = be_get32(p), p += 4;
	in.size = be_get64(p), p += 8;
	in.rdev = be_get64(p), p += 8;
	in.atime_ns = be_get64(p), p += 8;
	in.mtime_ns = be_get64(p), p += 8;
	in.ctime_ns = be_get64(p), p += 8;
	in.btime_ns = be_get64(p), p += 8;
	in.generation = be_get64(p), p += 8;
	in.flags = be_get32(p);
	if (in.ino == 0)
		return -EBADMSG;
	*ret = in;
	return 0;
}

/* ---- stripe: version(1) stripe version(8) data_len(4) frag_len(4) k(1) m(1) flags(4)
 * present(8), then k+m times server(2) crc(4) ---- */

static size_t stripe_enc_len(unsigned k, unsigned m)
{
	return 31 + (size_t)(k + m) * 6;
}

size_t meta_stripe_encode(const struct meta_stripe *s, uint8_t *out, size_t size)
{
	unsigned n = (unsigned)s->k + s->m;
	size_t len;
	uint8_t *p = out;

	if (s->k == 0 || n > 64)
		return 0;
	len = stripe_enc_len(s->k, s->m);
	if (size < len)
		return len;
	*p++ = META_REC_STRIPE_V1;
	be_put64(p, s->version), p += 8;
	be_put32(p, s->data_len), p += 4;
	be_put32(p, s->frag_len), p += 4;
	*p++ = s->k;
	*p++ = s->m;
	be_put32(p, s->flags), p += 4;
	be_put64(p, s->present), p += 8;
	for (unsigned i = 0; i < n; i++) {
		be_put16(p, s->servers[i]), p += 2;
		be_put32(p, s->crcs[i]), p += 4;
	}
	return len;
}

int meta_stripe_decode(const uint8_t *buf, size_t len, struct meta_stripe *ret)
{
	struct meta_stripe s;
	const uint8_t *p = buf;
	unsigned n;

	if (len < 31 || buf[0] != META_REC_STRIPE_V1)
		return -EBADMSG;
	memset(&s, 0, sizeof(s));
	p++;
	s.version = be_get64(p), p += 8;
	s.data_len = be_get32(p), p += 4;
	s.frag_len = be_get32(p), p += 4;
	s.k = *p++;
	s.m = *p++;
	s.flags = be_get32(p), p += 4;
	s.present = be_get64(p), p += 8;
	n = (unsigned)s.k + s.m;
	if (s.k == 0 || n > 64 || len != stripe_enc_len(s.k, s.m))
		return -EBADMSG;
	/* fragments that do not exist cannot be present, and the data must fit in k of them */
	if (n < 64 && (s.present >> n) != 0)
		return -EBADMSG;
	if ((uint64_t)s.data_len > (uint64_t)s.k * s.frag_len)
		return -EBADMSG;
	for (unsigned i = 0; i < n; i++) {
		s.servers[i] = be_get16(p), p += 2;
		s.crcs[i] = be_get32(p), p += 4;
	}
	*ret = s;
	return 0;
}

/* ---- garbage: version(1) ino(8) stripe(8) version(8) index(1) server(2) = 28 bytes ---- */

size_t meta_garbage_encode(const struct meta_garbage *g, uint8_t out[META_GARBAGE_ENC_SIZE])
{
	uint8_t *p = out;

	*p++ = META_REC_GARBAGE_V1;
	be_put64(p, g->ino), p += 8;
	be_put64(p, g->stripe), p += 8;
	be_put64(p, g->version), p += 8;
	*p++ = g->index;
	be_put16(p, g->server), p += 2;
	return (size_t)(p - out);
}

int meta_garbage_decode(const uint8_t *buf, size_t len, struct meta_garbage *ret)
{
	struct meta_garbage g;
	const uint8_t *p = buf;

	if (len != META_GARBAGE_ENC_SIZE || buf[0] != META_REC_GARBAGE_V1)
		return -EBADMSG;
	p++;
	g.ino = be_get64(p), p += 8;
	g.stripe = be_get64(p), p += 8;
	g.version = be_get64(p), p += 8;
	g.index = *p++;
	g.server = be_get16(p);
	if (g.index >= 64)
		return -EBADMSG;
	*ret = g;
	return 0;
}

/* ---- superblock: version(1) format_version(4) uuid(16) k m stripe_size write_quorum(4 each)
 * create_time(8) bucket(len 1 + bytes) region(len 1 + bytes) credentials(len 2 + bytes)
 * n_servers(2), per server id(2) url(len 2 + bytes) zone(len 1 + bytes) weight(8) flags(4),
 * and a crc32c(4) of everything before it. Version 1 has no inline_max, versions 1 and 2 no
 * server flags; they decode with the defaults (4 KiB, 0). Version 2 is written while no
 * server has flags. ---- */

/* Length of a string field that must be shorter than its array and contain no NUL;
 * returns -1 when it is not terminated inside the array. */
static long str_field_len(const char *s, size_t field_size)
{
	size_t n = strnlen(s, field_size);

	return n < field_size ? (long)n : -1;
}

static bool superblock_valid(const struct meta_superblock *sb)
{
	uint64_t seen[65536 / 64] = { 0 };

	if (sb->k == 0 || sb->k > 64 || sb->m > 64 || sb->k + sb->m > 64)
		return false;
	if (sb->stripe_size == 0 || sb->stripe_size % (sb->k * 64) != 0)
		return false;
	if (sb->write_quorum < sb->k || sb->write_quorum > sb->k + sb->m)
		return false;
	if (sb->inline_max > META_INLINE_MAX)
		return false;
	if (str_field_len(sb->bucket, sizeof(sb->bucket)) < 0 ||
	    str_field_len(sb->region, sizeof(sb->region)) < 0 ||
	    str_field_len(sb->credentials, sizeof(sb->credentials)) < 0)
		return false;
	if (sb->n_servers > META_MAX_SERVERS)
		return false;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];

		if (str_field_len(sv->url, sizeof(sv->url)) <= 0 ||
		    str_field_len(sv->zone, sizeof(sv->zone)) < 0 ||
		    (sv->flags & ~META_SERVER_F_ALL) != 0)
			return false;
		if (seen[sv->id / 64] & (UINT64_C(1) << (sv->id % 64)))
			return false;
		seen[sv->id / 64] |= UINT64_C(1) << (sv->id % 64);
	}
	return true;
}

static uint8_t *put_str(uint8_t *p, const char *s, unsigned len_bytes)
{
	size_t n = strlen(s);

	if (len_bytes == 1)
		*p++ = (uint8_t)n;
	else
		be_put16(p, (uint16_t)n), p += 2;
	memcpy(p, s, n);
	return p + n;
}

size_t meta_superblock_encode(const struct meta_superblock *sb, uint8_t *out, size_t size)
{
	size_t len = 45 + 4 + 2 + 4;
	uint8_t *p = out;
	bool flags = false;

	if (!superblock_valid(sb))
		return 0;
	/* Version 2 while no server has flags, so that older programs still read it. */
	for (uint32_t i = 0; i < sb->n_servers; i++)
		flags |= sb->servers[i].flags != 0;
	len += 1 + strlen(sb->bucket) + 1 + strlen(sb->region) + 2 + strlen(sb->credentials);
	for (uint32_t i = 0; i < sb->n_servers; i++)
		len += 2 + 2 + strlen(sb->servers[i].url) + 1 + strlen(sb->servers[i].zone) + 8 +
		       (flags ? 4 : 0);
	if (size < len)
		return len;

	*p++ = flags ? META_REC_SUPERBLOCK_V3 : META_REC_SUPERBLOCK_V2;
	be_put32(p, sb->format_version), p += 4;
	memcpy(p, sb->fs_uuid, 16), p += 16;
	be_put32(p, sb->k), p += 4;
	be_put32(p, sb->m), p += 4;
	be_put32(p, sb->stripe_size), p += 4;
	be_put32(p, sb->write_quorum), p += 4;
	be_put32(p, sb->inline_max), p += 4;
	be_put64(p, sb->create_time_ns), p += 8;
	p = put_str(p, sb->bucket, 1);
	p = put_str(p, sb->region, 1);
	p = put_str(p, sb->credentials, 2);
	be_put16(p, (uint16_t)sb->n_servers), p += 2;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];

		be_put16(p, sv->id), p += 2;
		p = put_str(p, sv->url, 2);
		p = put_str(p, sv->zone, 1);
		be_put64(p, sv->weight), p += 8;
		if (flags)
			be_put32(p, sv->flags), p += 4;
	}
	be_put32(p, tcrc32c(0, out, (size_t)(p - out))), p += 4;
	return (size_t)(p - out);
}

/* Bounds-checked reader over an untrusted record. */
struct rd {
	const uint8_t *p, *end;
	bool bad;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	return p;
}

static uint32_t rd_u32(struct rd *r)
{
	const uint8_t *p = rd_take(r, 4);
	return p ? be_get32(p) : 0;
}

static uint16_t rd_u16(struct rd *r)
{
	const uint8_t *p = rd_take(r, 2);
	return p ? be_get16(p) : 0;
}

static uint64_t rd_u64(struct rd *r)
{
	const uint8_t *p = rd_take(r, 8);
	return p ? be_get64(p) : 0;
}

/* A length-prefixed string into a field of field_size bytes (NUL-terminated, no inner NUL). */
static void rd_str(struct rd *r, char *field, size_t field_size, unsigned len_bytes)
{
	const uint8_t *p;
	size_t n;

	if (len_bytes == 1) {
		p = rd_take(r, 1);
		n = p ? *p : 0;
	} else {
		n = rd_u16(r);
	}
	if (r->bad)
		return;
	if (n >= field_size) {
		r->bad = true;
		return;
	}
	p = rd_take(r, n);
	if (!p || memchr(p, 0, n)) {
		r->bad = true;
		return;
	}
	memcpy(field, p, n);
	field[n] = '\0';
}

int meta_superblock_decode(const uint8_t *buf, size_t len, struct meta_superblock *ret)
{
	struct meta_superblock *sb;
	struct rd r = { buf, buf + len, false };
	const uint8_t *p;
	uint32_t n;
	int err = -EBADMSG;

	/* Decode into a scratch copy: *ret is written only on success. The struct is large
	 * (about 86 KiB), so the scratch copy lives on the heap. */
	sb = calloc(1, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	if (len < 45 + 4 ||
	    (buf[0] != META_REC_SUPERBLOCK_V1 && buf[0] != META_REC_SUPERBLOCK_V2 &&
	     buf[0] != META_REC_SUPERBLOCK_V3) ||
	    be_get32(buf + len - 4) != tcrc32c(0, buf, len - 4))
		goto out;
	r.end = buf + len - 4;
	rd_take(&r, 1);
	sb->format_version = rd_u32(&r);
	p = rd_take(&r, 16);
	if (p)
		memcpy(sb->fs_uuid, p, 16);
	sb->k = rd_u32(&r);
	sb->m = rd_u32(&r);
	sb->stripe_size = rd_u32(&r);
	sb->write_quorum = rd_u32(&r);
	sb->inline_max = buf[0] == META_REC_SUPERBLOCK_V1 ? META_INLINE_DEFAULT : rd_u32(&r);
	sb->create_time_ns = rd_u64(&r);
	rd_str(&r, sb->bucket, sizeof(sb->bucket), 1);
	rd_str(&r, sb->region, sizeof(sb->region), 1);
	rd_str(&r, sb->credentials, sizeof(sb->credentials), 2);
	n = rd_u16(&r);
	if (r.bad || n > META_MAX_SERVERS)
		goto out;
	sb->n_servers = n;
	for (uint32_t i = 0; i < n && !r.bad; i++) {
		struct meta_server *sv = &sb->servers[i];

		sv->id = rd_u16(&r);
		rd_str(&r, sv->url, sizeof(sv->url), 2);
		rd_str(&r, sv->zone, sizeof(sv->zone), 1);
		sv->weight = rd_u64(&r);
		sv->flags = buf[0] == META_REC_SUPERBLOCK_V3 ? rd_u32(&r) : 0;
	}
	if (r.bad || r.p != r.end || !superblock_valid(sb))
		goto out;
	memcpy(ret, sb, sizeof(*sb));
	err = 0;
out:
	free(sb);
	return err;
}

/* ---- the server list ---- */

const struct meta_server *meta_server_find(const struct meta_superblock *sb, uint16_t id)
{
	for (uint32_t i = 0; i < sb->n_servers; i++)
		if (sb->servers[i].id == id)
			return &sb->servers[i];
	return NULL;
}

bool meta_server_active(const struct meta_superblock *sb, uint16_t id)
{
	const struct meta_server *sv = meta_server_find(sb, id);

	return sv && !(sv->flags & META_SERVER_F_RETIRED);
}

static bool zone_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static int parse_error(char *err, size_t err_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int parse_error(char *err, size_t err_size, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int meta_server_parse(const char *spec, struct meta_server *ret, char *err, size_t err_size)
{
	struct meta_server sv = { .weight = 1 };
	const char *p = spec, *host, *end;
	size_t n;

	end = strchr(p, ',');
	n = end ? (size_t)(end - p) : strlen(p);
	if (n == 0)
		return parse_error(err, err_size, "empty server URL");
	if (n >= sizeof(sv.url))
		return parse_error(err, err_size, "server URL '%.40s...' longer than %zu bytes", p,
				   sizeof(sv.url) - 1);
	memcpy(sv.url, p, n);
	sv.url[n] = '\0';
	if (strncmp(sv.url, "http://", 7) == 0)
		host = sv.url + 7;
	else if (strncmp(sv.url, "https://", 8) == 0)
		host = sv.url + 8;
	else
		return parse_error(err, err_size,
				   "server '%s': the URL must start with http:// or https://", sv.url);
	while (n > (size_t)(host - sv.url) && sv.url[n - 1] == '/')
		sv.url[--n] = '\0';
	if (*host == '\0' || *host == '/' || *host == ':')
		return parse_error(err, err_size, "server '%s': no host in the URL", sv.url);
	for (const char *c = sv.url; *c; c++)
		if (*c <= 0x20 || *c >= 0x7f || *c == '?' || *c == '#')
			return parse_error(err, err_size,
					   "server '%s': invalid character in the URL", sv.url);

	for (p = end; p; p = end) {
		const char *tok = p + 1;
		char val[64];

		end = strchr(tok, ',');
		n = end ? (size_t)(end - tok) : strlen(tok);
		if (n > 5 && strncmp(tok, "zone=", 5) == 0) {
			if (n - 5 >= sizeof(sv.zone))
				return parse_error(err, err_size,
						   "server '%s': zone longer than %zu bytes", sv.url,
						   sizeof(sv.zone) - 1);
			for (size_t i = 5; i < n; i++)
				if (!zone_char(tok[i]))
					return parse_error(err, err_size,
							   "server '%s': invalid zone '%.*s' "
							   "(use [A-Za-z0-9._-])",
							   sv.url, (int)(n - 5), tok + 5);
			memcpy(sv.zone, tok + 5, n - 5);
			sv.zone[n - 5] = '\0';
		} else if (n > 7 && strncmp(tok, "weight=", 7) == 0) {
			bool fits = n - 7 < sizeof(val);

			if (fits) {
				memcpy(val, tok + 7, n - 7);
				val[n - 7] = '\0';
			}
			if (!fits || tparse_size(val, &sv.weight) < 0 || sv.weight == 0)
				return parse_error(err, err_size, "server '%s': invalid weight '%.*s'",
						   sv.url, (int)(n - 7), tok + 7);
		} else {
			return parse_error(err, err_size,
					   "server '%s': unknown option '%.*s' (zone=, weight=)",
					   sv.url, (int)n, tok);
		}
	}
	*ret = sv;
	return 0;
}
