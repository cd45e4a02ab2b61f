/*
 * Unit tests for meta: key order, record codecs (round trips, every truncation rejected,
 * inconsistent records rejected), mkfs/open life cycle and its errors, batch atomicity,
 * directory listing with continuation, the inode counter across reopen (durability
 * invariant 3 of src/meta/meta.c), the garbage queue (invariant 4), xattrs, and data
 * surviving close + reopen.
 *
 * Every database lives under the run's temporary directory (unit.h), removed after the last
 * test in the runner process, so also when a test fails.
 * Randomised: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "tessera/common.h"
#include "tessera/meta.h"

#include "unit.h"

/* ---- fixtures ---- */

static struct meta_superblock *make_sb(uint32_t k, uint32_t m, uint32_t n_servers)
{
	struct meta_superblock *sb = calloc(1, sizeof(*sb));

	ck_assert_ptr_nonnull(sb);
	sb->format_version = META_FORMAT_VERSION;
	for (int i = 0; i < 16; i++)
		sb->fs_uuid[i] = (uint8_t)(i * 17 + 1);
	sb->k = k;
	sb->m = m;
	sb->stripe_size = 4u << 20;
	sb->write_quorum = k + 1 <= k + m ? k + 1 : k + m;
	sb->create_time_ns = 1700000000123456789ull;
	strcpy(sb->bucket, "tessera");
	strcpy(sb->region, "us-east-1");
	strcpy(sb->credentials, "file:credentials");
	sb->n_servers = n_servers;
	for (uint32_t i = 0; i < n_servers; i++) {
		sb->servers[i].id = (uint16_t)i;
		snprintf(sb->servers[i].url, sizeof(sb->servers[i].url), "http://127.0.0.1:%u",
			 9000 + i);
		snprintf(sb->servers[i].zone, sizeof(sb->servers[i].zone), "z%u", i % 3);
		sb->servers[i].weight = 1 + i;
	}
	return sb;
}

/* mkfs + open in a fresh directory. */
static struct meta *fresh_fs(char *dir, size_t size)
{
	struct meta_superblock *sb = make_sb(4, 2, 6);
	struct meta *m = NULL;

	unit_tmp_path(dir, size, "db");
	ck_assert_int_eq(meta_mkfs(dir, sb, 1000, 1000, false), 0);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	free(sb);
	return m;
}

/* RocksDB's bytewise comparator: memcmp, then the shorter key first. */
static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* Field-wise comparisons: the structs have padding. */
static void assert_inode_eq(const struct meta_inode *a, const struct meta_inode *b)
{
	ck_assert_uint_eq(a->ino, b->ino);
	ck_assert_uint_eq(a->mode, b->mode);
	ck_assert_uint_eq(a->uid, b->uid);
	ck_assert_uint_eq(a->gid, b->gid);
	ck_assert_uint_eq(a->nlink, b->nlink);
	ck_assert_uint_eq(a->size, b->size);
	ck_assert_uint_eq(a->rdev, b->rdev);
	ck_assert_uint_eq(a->atime_ns, b->atime_ns);
	ck_assert_uint_eq(a->mtime_ns, b->mtime_ns);
	ck_assert_uint_eq(a->ctime_ns, b->ctime_ns);
	ck_assert_uint_eq(a->btime_ns, b->btime_ns);
	ck_assert_uint_eq(a->generation, b->generation);
	ck_assert_uint_eq(a->flags, b->flags);
}

static void assert_stripe_eq(const struct meta_stripe *a, const struct meta_stripe *b)
{
	ck_assert_uint_eq(a->version, b->version);
	ck_assert_uint_eq(a->data_len, b->data_len);
	ck_assert_uint_eq(a->frag_len, b->frag_len);
	ck_assert_uint_eq(a->k, b->k);
	ck_assert_uint_eq(a->m, b->m);
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->present, b->present);
	for (int i = 0; i < a->k + a->m; i++) {
		ck_assert_uint_eq(a->servers[i], b->servers[i]);
		ck_assert_uint_eq(a->crcs[i], b->crcs[i]);
	}
}

/* ---- keys ---- */

START_TEST(test_dentry_key_order)
{
	uint8_t a[8 + META_NAME_MAX], b[8 + META_NAME_MAX];
	char longname[META_NAME_MAX];
	size_t alen, blen;

	memset(longname, 0xff, sizeof(longname));
	alen = meta_dentry_key(a, 1, longname, sizeof(longname));
	blen = meta_dentry_key(b, 2, "", 0);
	ck_assert_uint_eq(alen, 8 + META_NAME_MAX);
	ck_assert_uint_eq(blen, 8);
	ck_assert_int_lt(key_cmp(a, alen, b, blen), 0);
	blen = meta_dentry_key(b, 2, "a", 1);
	ck_assert_int_lt(key_cmp(a, alen, b, blen), 0);

	alen = meta_dentry_key(a, 255, "zzz", 3);
	blen = meta_dentry_key(b, 256, "a", 1);
	ck_assert_int_lt(key_cmp(a, alen, b, blen), 0);

	/* within one parent, names sort bytewise and a prefix sorts first */
	alen = meta_dentry_key(a, 7, "ab", 2);
	blen = meta_dentry_key(b, 7, "abc", 3);
	ck_assert_int_lt(key_cmp(a, alen, b, blen), 0);
	ck_assert_int_eq(memcmp(a, "\0\0\0\0\0\0\0\7ab", 10), 0);
}
END_TEST

START_TEST(test_stripe_key_order)
{
	uint8_t a[16], b[16], c[16], d[16];

	meta_stripe_key(a, 9, 1);
	meta_stripe_key(b, 9, 256);
	meta_stripe_key(c, 9, UINT64_C(1) << 40);
	meta_stripe_key(d, 10, 0);
	ck_assert_int_lt(key_cmp(a, 16, b, 16), 0);
	ck_assert_int_lt(key_cmp(b, 16, c, 16), 0);
	ck_assert_int_lt(key_cmp(c, 16, d, 16), 0);
}
END_TEST

/* ---- record codecs ---- */

START_TEST(test_inode_codec)
{
	struct meta_inode in = {
		.ino = 0x0102030405060708ull, .mode = 0100644, .uid = 1000, .gid = 100,
		.nlink = 3, .size = (UINT64_C(1) << 50) + 7, .rdev = 0x0801,
		.atime_ns = 1, .mtime_ns = UINT64_MAX, .ctime_ns = 3, .btime_ns = 4,
		.generation = 99, .flags = META_INODE_F_ORPHAN,
	};
	struct meta_inode out, sentinel;
	uint8_t buf[META_INODE_ENC_SIZE + 8];
	size_t len;

	ck_assert_uint_eq(meta_inode_encode(&in, buf, 10), META_INODE_ENC_SIZE);
	len = meta_inode_encode(&in, buf, sizeof(buf));
	ck_assert_uint_eq(len, META_INODE_ENC_SIZE);
	memset(&out, 0, sizeof(out));
	ck_assert_int_eq(meta_inode_decode(buf, len, &out), 0);
	assert_inode_eq(&in, &out);

	memset(&sentinel, 0xa5, sizeof(sentinel));
	for (size_t n = 0; n < len; n++) {
		out = sentinel;
		ck_assert_int_eq(meta_inode_decode(buf, n, &out), -EBADMSG);
		ck_assert_mem_eq(&out, &sentinel, sizeof(out)); /* untouched on failure */
	}
	ck_assert_int_eq(meta_inode_decode(buf, len + 1, &out), -EBADMSG);
	buf[0] = 2; /* unknown record version */
	ck_assert_int_eq(meta_inode_decode(buf, len, &out), -EBADMSG);
}
END_TEST

static void stripe_fill(struct meta_stripe *s, uint8_t k, uint8_t m)
{
	memset(s, 0, sizeof(*s));
	s->version = 0x1122334455667788ull;
	s->k = k;
	s->m = m;
	s->frag_len = 65536;
	s->data_len = (uint32_t)k * 65536 - 5;
	s->flags = META_STRIPE_F_DEGRADED;
	s->present = (k + m == 64 ? UINT64_MAX : (UINT64_C(1) << (k + m)) - 1) & ~UINT64_C(2);
	for (unsigned i = 0; i < (unsigned)k + m; i++) {
		s->servers[i] = (uint16_t)(i * 3 + 1);
		s->crcs[i] = 0xdeadbeefu ^ i;
	}
}

START_TEST(test_stripe_codec)
{
	static const uint8_t geo[][2] = { { 1, 0 }, { 4, 2 }, { 10, 4 }, { 32, 16 }, { 32, 32 } };

	for (size_t g = 0; g < TESSERA_ARRAY_SIZE(geo); g++) {
		struct meta_stripe s, out;
		uint8_t buf[META_STRIPE_ENC_MAX];
		size_t len;

		stripe_fill(&s, geo[g][0], geo[g][1]);
		len = meta_stripe_encode(&s, buf, sizeof(buf));
		ck_assert_uint_eq(len, 31 + 6 * (size_t)(s.k + s.m));
		ck_assert_int_eq(meta_stripe_decode(buf, len, &out), 0);
		assert_stripe_eq(&s, &out);
		for (size_t n = 0; n < len; n++)
			ck_assert_int_eq(meta_stripe_decode(buf, n, &out), -EBADMSG);
		ck_assert_int_eq(meta_stripe_decode(buf, len + 1, &out), -EBADMSG);
	}
}
END_TEST

START_TEST(test_stripe_codec_inconsistent)
{
	struct meta_stripe s, out;
	uint8_t buf[31 + 6 * 80];
	size_t len;

	/* invalid geometries do not encode */
	stripe_fill(&s, 4, 2);
	s.k = 0;
	ck_assert_uint_eq(meta_stripe_encode(&s, buf, sizeof(buf)), 0);
	s.k = 40;
	s.m = 30;
	ck_assert_uint_eq(meta_stripe_encode(&s, buf, sizeof(buf)), 0);

	/* k+m > 64 with a length that matches it */
	stripe_fill(&s, 32, 32);
	len = meta_stripe_encode(&s, buf, sizeof(buf));
	buf[17] = 40, buf[18] = 30;
	memset(buf + len, 0, 6 * 6);
	ck_assert_int_eq(meta_stripe_decode(buf, 31 + 6 * 70, &out), -EBADMSG);

	/* a present bit for a fragment that does not exist */
	stripe_fill(&s, 4, 2);
	s.present |= UINT64_C(1) << 6;
	len = meta_stripe_encode(&s, buf, sizeof(buf));
	ck_assert_int_eq(meta_stripe_decode(buf, len, &out), -EBADMSG);

	/* more data than k fragments hold */
	stripe_fill(&s, 4, 2);
	s.data_len = 4 * s.frag_len + 1;
	len = meta_stripe_encode(&s, buf, sizeof(buf));
	ck_assert_int_eq(meta_stripe_decode(buf, len, &out), -EBADMSG);

	/* k = 0 in the bytes */
	stripe_fill(&s, 4, 2);
	len = meta_stripe_encode(&s, buf, sizeof(buf));
	buf[17] = 0;
	ck_assert_int_eq(meta_stripe_decode(buf, len, &out), -EBADMSG);
}
END_TEST

/* Encodes sb as a version 1 or 2 record, as filesystems made before server flags have it. */
static size_t encode_old_superblock(const struct meta_superblock *sb, int version, uint8_t *out)
{
	uint8_t *p = out;

	*p++ = (uint8_t)version;
	be_put32(p, sb->format_version), p += 4;
	memcpy(p, sb->fs_uuid, 16), p += 16;
	be_put32(p, sb->k), p += 4;
	be_put32(p, sb->m), p += 4;
	be_put32(p, sb->stripe_size), p += 4;
	be_put32(p, sb->write_quorum), p += 4;
	if (version >= 2)
		be_put32(p, sb->inline_max), p += 4;
	be_put64(p, sb->create_time_ns), p += 8;
	*p++ = (uint8_t)strlen(sb->bucket);
	memcpy(p, sb->bucket, strlen(sb->bucket)), p += strlen(sb->bucket);
	*p++ = (uint8_t)strlen(sb->region);
	memcpy(p, sb->region, strlen(sb->region)), p += strlen(sb->region);
	be_put16(p, (uint16_t)strlen(sb->credentials)), p += 2;
	memcpy(p, sb->credentials, strlen(sb->credentials)), p += strlen(sb->credentials);
	be_put16(p, (uint16_t)sb->n_servers), p += 2;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];

		be_put16(p, sv->id), p += 2;
		be_put16(p, (uint16_t)strlen(sv->url)), p += 2;
		memcpy(p, sv->url, strlen(sv->url)), p += strlen(sv->url);
		*p++ = (uint8_t)strlen(sv->zone);
		memcpy(p, sv->zone, strlen(sv->zone)), p += strlen(sv->zone);
		be_put64(p, sv->weight), p += 8;
	}
	be_put32(p, tcrc32c(0, out, (size_t)(p - out))), p += 4;
	return (size_t)(p - out);
}

START_TEST(test_superblock_codec)
{
	struct meta_superblock *sb = make_sb(4, 2, 7), *out = calloc(1, sizeof(*out));
	uint8_t *buf = malloc(META_SUPERBLOCK_ENC_MAX);
	size_t len;

	ck_assert_ptr_nonnull(out);
	sb->inline_max = 1234;
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	ck_assert_uint_gt(len, 0);
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, 3), len);
	ck_assert_int_eq(meta_superblock_decode(buf, len, out), 0);
	ck_assert_mem_eq(sb, out, sizeof(*sb));

	/* Older records still read: version 2 (no server flags) and version 1 (no inline_max
	 * either), with the defaults such filesystems had. */
	sb->servers[2].flags = META_SERVER_F_RETIRED;
	for (int version = 1; version <= 2; version++) {
		uint8_t *old = malloc(META_SUPERBLOCK_ENC_MAX);
		size_t n = encode_old_superblock(sb, version, old);

		ck_assert_int_eq(meta_superblock_decode(old, n, out), 0);
		ck_assert_uint_eq(out->inline_max, version == 1 ? 4096 : 1234);
		ck_assert_uint_eq(out->write_quorum, sb->write_quorum);
		ck_assert_uint_eq(out->create_time_ns, sb->create_time_ns);
		ck_assert_uint_eq(out->n_servers, sb->n_servers);
		for (uint32_t i = 0; i < sb->n_servers; i++) {
			ck_assert_uint_eq(out->servers[i].flags, 0);
			ck_assert_uint_eq(out->servers[i].weight, sb->servers[i].weight);
			ck_assert_str_eq(out->servers[i].zone, sb->servers[i].zone);
		}
		free(old);
	}
	/* version 3 keeps the flags; unknown flags are refused */
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	ck_assert_int_eq(meta_superblock_decode(buf, len, out), 0);
	ck_assert_uint_eq(out->servers[2].flags, META_SERVER_F_RETIRED);
	ck_assert(!meta_server_active(out, 2));
	ck_assert(meta_server_active(out, 3));
	ck_assert(!meta_server_active(out, 99));
	ck_assert_ptr_null(meta_server_find(out, 99));
	ck_assert_str_eq(meta_server_find(out, 4)->url, "http://127.0.0.1:9004");
	sb->servers[2].flags = 0x4;
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->servers[2].flags = 0;
	/* without flags the record is version 2 (older programs read it) */
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	ck_assert_uint_eq(buf[0], 2);
	{
		uint8_t *old2 = malloc(META_SUPERBLOCK_ENC_MAX);
		ck_assert_uint_eq(encode_old_superblock(sb, 2, old2), len);
		ck_assert_mem_eq(old2, buf, len);
		free(old2);
	}
	/* Beyond META_INLINE_MAX: refused. */
	sb->inline_max = META_INLINE_MAX + 1;
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->inline_max = 1234;
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);

	for (size_t n = 0; n < len; n++)
		ck_assert_int_eq(meta_superblock_decode(buf, n, out), -EBADMSG);
	/* any flipped byte fails the crc or the structure */
	for (size_t n = 0; n < len; n++) {
		buf[n] ^= 0x40;
		ck_assert_int_eq(meta_superblock_decode(buf, len, out), -EBADMSG);
		buf[n] ^= 0x40;
	}

	/* the largest superblock fits META_SUPERBLOCK_ENC_MAX */
	free(sb);
	sb = make_sb(32, 16, META_MAX_SERVERS);
	memset(sb->bucket, 'b', sizeof(sb->bucket) - 1);
	memset(sb->region, 'r', sizeof(sb->region) - 1);
	memset(sb->credentials, 'c', sizeof(sb->credentials) - 1);
	for (int i = 0; i < META_MAX_SERVERS; i++) {
		memset(sb->servers[i].url, 'u', sizeof(sb->servers[i].url) - 1);
		memset(sb->servers[i].zone, 'z', sizeof(sb->servers[i].zone) - 1);
	}
	sb->servers[7].flags = META_SERVER_F_REFILL; /* flags make it a version 3 record */
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	ck_assert_uint_eq(len, META_SUPERBLOCK_ENC_MAX);
	ck_assert_int_eq(meta_superblock_decode(buf, len, out), 0);
	ck_assert_mem_eq(sb, out, sizeof(*sb));

	free(sb);
	free(out);
	free(buf);
}
END_TEST

START_TEST(test_superblock_invalid)
{
	struct meta_superblock *sb = make_sb(4, 2, 6);
	uint8_t *buf = malloc(META_SUPERBLOCK_ENC_MAX);

	sb->write_quorum = 3; /* below k */
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->write_quorum = 7; /* above k+m */
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->write_quorum = 5;
	sb->stripe_size = 4 * 64 + 64; /* not a multiple of k*64 */
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->stripe_size = 4 * 64;
	sb->servers[3].id = 1; /* duplicate id */
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	sb->servers[3].id = 3;
	sb->servers[2].url[0] = '\0';
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	strcpy(sb->servers[2].url, "http://x");
	memset(sb->bucket, 'b', sizeof(sb->bucket)); /* unterminated */
	ck_assert_uint_eq(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	strcpy(sb->bucket, "b");
	ck_assert_uint_gt(meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX), 0);
	free(sb);
	free(buf);
}
END_TEST

START_TEST(test_server_parse)
{
	struct meta_server sv;
	char err[320];
	static const char *const bad[] = {
		"", "127.0.0.1:9000", "ftp://x", "http://", "http:///x", "http://:80",
		"http://a b", "http://a?x", "http://a#x", "http://a\x01", "http://a,zone=",
		"http://a,zone=a/b", "http://a,weight=0", "http://a,weight=x", "http://a,weight=",
		"http://a,colour=red", "http://a,",
	};

	memset(&sv, 0x55, sizeof(sv));
	ck_assert_int_eq(meta_server_parse("http://127.0.0.1:9000//", &sv, err, sizeof(err)), 0);
	ck_assert_str_eq(sv.url, "http://127.0.0.1:9000");
	ck_assert_str_eq(sv.zone, "");
	ck_assert_uint_eq(sv.weight, 1);
	ck_assert_uint_eq(sv.flags, 0);
	ck_assert_int_eq(meta_server_parse("https://h:1,zone=rack-1.a,weight=4T", &sv, err,
					   sizeof(err)),
			 0);
	ck_assert_str_eq(sv.url, "https://h:1");
	ck_assert_str_eq(sv.zone, "rack-1.a");
	ck_assert_uint_eq(sv.weight, UINT64_C(4) << 40);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct meta_server keep = sv;

		err[0] = '\0';
		ck_assert_msg(meta_server_parse(bad[i], &sv, err, sizeof(err)) == -EINVAL, "%s",
			      bad[i]);
		ck_assert_msg(err[0] != '\0', "no reason for '%s'", bad[i]);
		ck_assert_mem_eq(&keep, &sv, sizeof(sv)); /* untouched on failure */
	}
	{
		char url[300] = "http://";

		memset(url + 7, 'h', 260);
		url[267] = '\0';
		ck_assert_int_eq(meta_server_parse(url, &sv, err, sizeof(err)), -EINVAL);
	}
}
END_TEST

START_TEST(test_superblock_update)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_superblock *sb = calloc(1, sizeof(*sb));

	ck_assert_ptr_nonnull(sb);
	/* retire one, move another, add a seventh: kept across a reopen */
	memcpy(sb, meta_superblock(m), sizeof(*sb));
	sb->servers[1].flags = META_SERVER_F_RETIRED;
	strcpy(sb->servers[4].url, "http://127.0.0.1:9999");
	sb->servers[6] = sb->servers[5];
	sb->servers[6].id = 6;
	strcpy(sb->servers[6].url, "http://127.0.0.1:9106");
	sb->n_servers = 7;
	ck_assert_int_eq(meta_superblock_update(m, sb), 0);
	ck_assert_mem_eq(meta_superblock(m), sb, sizeof(*sb));
	meta_close(m);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	ck_assert_mem_eq(meta_superblock(m), sb, sizeof(*sb));

	/* what the stored data depends on cannot change; ids cannot disappear */
	sb->k = 3;
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->k = 4;
	sb->fs_uuid[3] ^= 1;
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->fs_uuid[3] ^= 1;
	sb->stripe_size /= 2;
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->stripe_size *= 2;
	strcpy(sb->bucket, "other");
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	strcpy(sb->bucket, "tessera");
	sb->n_servers = 6; /* drops id 6 */
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->n_servers = 7;
	sb->servers[6].id = 5; /* duplicate */
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->servers[6].id = 6;
	sb->servers[6].flags = 0x80;
	ck_assert_int_eq(meta_superblock_update(m, sb), -EINVAL);
	sb->servers[6].flags = 0;
	/* nothing of the refused ones was applied */
	ck_assert_mem_eq(meta_superblock(m), sb, sizeof(*sb));
	meta_close(m);
	free(sb);
}
END_TEST

struct all_seen {
	uint64_t parents[16], inos[16];
	unsigned n;
};

static int dentry_all_fn(void *ctx, uint64_t parent, const char *name, size_t name_len,
			 uint64_t ino, uint32_t mode)
{
	struct all_seen *a = ctx;

	ck_assert_uint_eq(strlen(name), name_len);
	ck_assert_uint_lt(a->n, 16);
	a->parents[a->n] = parent;
	a->inos[a->n++] = ino;
	return 0;
}

static int stripe_all_fn(void *ctx, uint64_t ino, uint64_t stripe, const struct meta_stripe *s)
{
	struct all_seen *a = ctx;

	ck_assert_uint_lt(a->n, 16);
	ck_assert_uint_eq(s->version, ino * 100 + stripe);
	a->parents[a->n] = ino;
	a->inos[a->n++] = stripe;
	return a->n == 3 ? 1 : 0; /* stop after three */
}

START_TEST(test_list_all)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	struct meta_stripe st;
	struct all_seen a = { 0 };

	/* entries of three directories, one of which has no inode: all come out, in order */
	meta_batch_dentry_put(b, 7, "x", 1, 70, S_IFREG);
	meta_batch_dentry_put(b, 1, "b", 1, 11, S_IFREG);
	meta_batch_dentry_put(b, 1, "a", 1, 10, S_IFDIR);
	meta_batch_dentry_put(b, 300, "z", 1, 30, S_IFREG);
	stripe_fill(&st, 4, 2);
	for (uint64_t ino = 5; ino <= 6; ino++)
		for (uint64_t i = 0; i < 2; i++) {
			st.version = ino * 100 + i;
			meta_batch_stripe_put(b, ino, i, &st);
		}
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_dentry_list_all(m, dentry_all_fn, &a), 0);
	ck_assert_uint_eq(a.n, 4);
	ck_assert_uint_eq(a.parents[0], 1);
	ck_assert_uint_eq(a.inos[0], 10);
	ck_assert_uint_eq(a.inos[1], 11);
	ck_assert_uint_eq(a.parents[2], 7);
	ck_assert_uint_eq(a.parents[3], 300);

	memset(&a, 0, sizeof(a));
	ck_assert_int_eq(meta_stripe_list_all(m, stripe_all_fn, &a), 0);
	ck_assert_uint_eq(a.n, 3);
	ck_assert_uint_eq(a.parents[0], 5);
	ck_assert_uint_eq(a.inos[1], 1);
	ck_assert_uint_eq(a.parents[2], 6);
	ck_assert_uint_eq(a.inos[2], 0);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

START_TEST(test_backup)
{
	char dir[128], dest[160], bad[200];
	struct meta *m = fresh_fs(dir, sizeof(dir)), *b2 = NULL;
	struct meta_batch *b = meta_batch_new(m);
	struct meta_inode in;
	uint64_t got;
	int fd;

	/* a credentials file travels along */
	snprintf(bad, sizeof(bad), "%s/credentials", dir);
	fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "AK SK\n", 6), 6);
	close(fd);
	in = (struct meta_inode){ .ino = 42, .mode = S_IFREG | 0644, .nlink = 1, .size = 5 };
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, META_ROOT_INO, "f", 1, 42, S_IFREG);
	ck_assert_int_eq(meta_commit(m, b, false), 0); /* not synced: the checkpoint flushes */

	snprintf(dest, sizeof(dest), "%s.bk", dir);
	ck_assert_int_eq(meta_backup(m, dest), 0);
	ck_assert_int_eq(meta_backup(m, dest), -EEXIST);
	snprintf(bad, sizeof(bad), "%s/no/such", dir);
	ck_assert_int_eq(meta_backup(m, bad), -ENOENT);
	/* later changes are not in it */
	meta_batch_dentry_del(b, META_ROOT_INO, "f", 1);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	meta_batch_free(b);

	ck_assert_int_eq(meta_open(dest, &b2), 0);
	ck_assert_mem_eq(meta_superblock(b2), meta_superblock(m), sizeof(struct meta_superblock));
	ck_assert_int_eq(meta_dentry_get(b2, META_ROOT_INO, "f", 1, &got, NULL), 0);
	ck_assert_uint_eq(got, 42);
	ck_assert_int_eq(meta_inode_get(b2, 42, &in), 0);
	ck_assert_uint_eq(in.size, 5);
	meta_close(b2);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "f", 1, &got, NULL), -ENOENT);
	snprintf(bad, sizeof(bad), "%s/credentials", dest);
	char *buf = NULL;
	size_t len;
	ck_assert_int_eq(tfile_read_all(bad, 100, &buf, &len), 0);
	ck_assert_str_eq(buf, "AK SK\n");
	free(buf);
	meta_close(m);
}
END_TEST

START_TEST(test_read_only)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir)), *ro = NULL, *busy = NULL;
	struct meta_batch *b = meta_batch_new(m);
	struct meta_inode in = { .ino = 77, .mode = S_IFREG | 0600, .nlink = 1, .size = 3 };
	uint64_t got;

	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, META_ROOT_INO, "x", 1, 77, S_IFREG);
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	ck_assert_int_eq(meta_open(dir, &busy), -EBUSY);
	/* while the writer holds it: a read-only view of this moment */
	ck_assert_int_eq(meta_open_read_only(dir, &ro), 0);
	ck_assert_mem_eq(meta_superblock(ro), meta_superblock(m), sizeof(struct meta_superblock));
	ck_assert_int_eq(meta_dentry_get(ro, META_ROOT_INO, "x", 1, &got, NULL), 0);
	ck_assert_uint_eq(got, 77);
	struct meta_batch *rb = meta_batch_new(ro);
	meta_batch_dentry_del(rb, META_ROOT_INO, "x", 1);
	ck_assert_int_lt(meta_commit(ro, rb, false), 0);
	meta_batch_free(rb);
	meta_close(ro);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "x", 1, &got, NULL), 0);
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "-none");
	ck_assert_int_eq(meta_open_read_only(dir, &ro), -ENOENT);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

/* ---- life cycle ---- */

START_TEST(test_mkfs_open)
{
	char dir[128];
	struct meta_superblock *sb = make_sb(4, 2, 6);
	struct meta *m = NULL, *m2 = NULL;
	struct meta_inode root;
	uint64_t t0 = tclock_realtime_ns();
	int status;
	pid_t pid;

	unit_tmp_path(dir, sizeof(dir), "db");
	ck_assert_int_eq(meta_mkfs(dir, sb, 1234, 5678, false), 0);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	ck_assert_mem_eq(meta_superblock(m), sb, sizeof(*sb));
	ck_assert_str_eq(meta_dir(m), dir);

	ck_assert_int_eq(meta_inode_get(m, META_ROOT_INO, &root), 0);
	ck_assert_uint_eq(root.ino, META_ROOT_INO);
	ck_assert_uint_eq(root.mode, S_IFDIR | 0755);
	ck_assert_uint_eq(root.nlink, 2);
	ck_assert_uint_eq(root.uid, 1234);
	ck_assert_uint_eq(root.gid, 5678);
	ck_assert_uint_le(root.mtime_ns, tclock_realtime_ns());
	ck_assert_uint_ge(root.mtime_ns + 60000000000ull, t0);
	ck_assert_int_eq(meta_dir_has_entries(m, META_ROOT_INO), 0);
	ck_assert_int_eq(meta_inode_get(m, 2, &root), -ENOENT);

	/* a second open of the same directory, from this process and from another one */
	ck_assert_int_eq(meta_open(dir, &m2), -EBUSY);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(meta_open(dir, &m2) == -EBUSY ? 0 : 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* and mkfs --force must not destroy a filesystem in use */
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, true), -EBUSY);
	ck_assert_int_eq(meta_sync(m), 0);
	meta_close(m);

	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), -EEXIST);
	sb->k = 3;
	sb->stripe_size = 3 * 65536;
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, true), 0);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	ck_assert_uint_eq(meta_superblock(m)->k, 3);
	ck_assert_int_eq(meta_inode_get(m, META_ROOT_INO, &root), 0);
	ck_assert_uint_eq(root.uid, 0);
	meta_close(m);
	free(sb);
}
END_TEST

START_TEST(test_open_errors)
{
	char dir[128], path[256];
	struct meta_superblock *sb = make_sb(4, 2, 6);
	struct meta *m = (struct meta *)0x1;

	unit_tmp_path(dir, sizeof(dir), "db");
	ck_assert_int_eq(meta_open(dir, &m), -ENOENT); /* no directory */
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(meta_open(dir, &m), -ENOENT); /* empty directory */
	ck_assert_ptr_eq(m, (struct meta *)0x1);       /* untouched */

	/* an invalid superblock is refused by mkfs */
	sb->write_quorum = 1;
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), -EINVAL);
	sb->write_quorum = 5;
	sb->format_version = 99;
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), -EINVAL);
	ck_assert_int_eq(meta_open(dir, &m), -ENOENT);

	/* mkfs creates missing parents */
	snprintf(path, sizeof(path), "%s/a/b", dir);
	sb->format_version = META_FORMAT_VERSION;
	ck_assert_int_eq(meta_mkfs(path, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(path, &m), 0);
	meta_close(m);
	meta_close(NULL);
	free(sb);
}
END_TEST

/* Overwrites the superblock record behind meta's back. */
static void poke_superblock(const char *dir, const void *val, size_t len)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_column_family_handle_t *cf[16];
	const rocksdb_options_t *cfo[16];
	char *err = NULL, **names;
	size_t n;
	rocksdb_t *db;

	names = rocksdb_list_column_families(o, dir, &n, &err);
	ck_assert_ptr_null(err);
	ck_assert_uint_le(n, 16);
	for (size_t i = 0; i < n; i++)
		cfo[i] = o;
	db = rocksdb_open_column_families(o, dir, (int)n, (const char *const *)names, cfo, cf,
					  &err);
	ck_assert_ptr_null(err);
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], "system") == 0)
			rocksdb_put_cf(db, wo, cf[i], "superblock", 10, val, len, &err);
	ck_assert_ptr_null(err);
	for (size_t i = 0; i < n; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);
	rocksdb_list_column_families_destroy(names, n);
	rocksdb_writeoptions_destroy(wo);
	rocksdb_options_destroy(o);
}

START_TEST(test_open_bad_superblock)
{
	char dir[128];
	struct meta_superblock *sb = make_sb(4, 2, 6);
	uint8_t *buf = malloc(META_SUPERBLOCK_ENC_MAX);
	struct meta *m = NULL;
	size_t len;

	unit_tmp_path(dir, sizeof(dir), "db");
	ck_assert_int_eq(meta_mkfs(dir, sb, 0, 0, false), 0);
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	poke_superblock(dir, buf, len - 1);
	ck_assert_int_eq(meta_open(dir, &m), -EBADMSG);

	sb->format_version = META_FORMAT_VERSION + 1; /* from a newer tesserafs */
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	poke_superblock(dir, buf, len);
	ck_assert_int_eq(meta_open(dir, &m), -EBADMSG);

	sb->format_version = META_FORMAT_VERSION;
	len = meta_superblock_encode(sb, buf, META_SUPERBLOCK_ENC_MAX);
	poke_superblock(dir, buf, len);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	meta_close(m);
	free(buf);
	free(sb);
}
END_TEST

/* ---- batches and reads ---- */

struct collect {
	char names[4096][16];
	uint64_t inos[4096];
	int n;
	int stop_after; /* > 0: the callback stops after that many */
};

static int collect_fn(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	struct collect *c = ctx;

	ck_assert_uint_lt(name_len, 16);
	ck_assert_uint_eq(strlen(name), name_len);
	ck_assert_uint_eq(mode, S_IFREG);
	memcpy(c->names[c->n], name, name_len + 1);
	c->inos[c->n++] = ino;
	return c->stop_after && c->n >= c->stop_after ? 1 : 0;
}

START_TEST(test_batch_atomic)
{
	char dir[128], name[16];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	static struct collect c;
	uint64_t ino;

	for (int i = 0; i < 2000; i++) {
		struct meta_inode in = { .ino = 100 + i, .mode = S_IFREG | 0644, .nlink = 1 };

		snprintf(name, sizeof(name), "f%05d", i);
		meta_batch_inode_put(b, &in);
		meta_batch_dentry_put(b, META_ROOT_INO, name, strlen(name), in.ino, in.mode);
	}
	/* nothing visible before commit */
	ck_assert_int_eq(meta_dir_has_entries(m, META_ROOT_INO), 0);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "f00000", 6, &ino, NULL), -ENOENT);
	ck_assert_int_eq(meta_inode_get(m, 100, &(struct meta_inode){ 0 }), -ENOENT);

	ck_assert_int_eq(meta_commit(m, b, false), 0);
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(meta_dentry_list(m, META_ROOT_INO, NULL, 0, collect_fn, &c), 0);
	ck_assert_int_eq(c.n, 2000);
	for (int i = 0; i < 2000; i++) {
		uint32_t mode = 0;

		snprintf(name, sizeof(name), "f%05d", i);
		ck_assert_str_eq(c.names[i], name);
		ck_assert_uint_eq(c.inos[i], 100 + i);
		ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, name, 6, &ino, &mode), 0);
		ck_assert_uint_eq(ino, 100 + i);
		ck_assert_uint_eq(mode, S_IFREG);
	}

	/* the committed batch was cleared: committing it again writes nothing */
	ck_assert_int_eq(meta_commit(m, b, true), 0);

	/* an invalid record poisons the whole batch */
	meta_batch_dentry_del(b, META_ROOT_INO, "f00000", 6);
	meta_batch_dentry_put(b, META_ROOT_INO, "", 0, 5, S_IFREG);
	ck_assert_int_eq(meta_commit(m, b, true), -EINVAL);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "f00000", 6, &ino, NULL), 0);
	/* and the batch is usable again afterwards */
	meta_batch_dentry_del(b, META_ROOT_INO, "f00000", 6);
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "f00000", 6, &ino, NULL), -ENOENT);

	meta_batch_free(b);
	meta_batch_free(NULL);
	meta_close(m);
}
END_TEST

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

START_TEST(test_dentry_list_continuation)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	static char want[500][16];
	static struct collect c, page;
	uint64_t s = unit_seed;
	const uint64_t parent = 256, n = 500;

	/* random names in random order; neighbours 255 and 257 must not leak in */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t r = unit_rng_next(&s);
		snprintf(want[i], sizeof(want[i]), "%c%" PRIx64 "-%" PRIu64, (char)('a' + r % 26),
			 r >> 40, i);
		meta_batch_dentry_put(b, parent, want[i], strlen(want[i]), 1000 + i, S_IFREG);
	}
	meta_batch_dentry_put(b, parent - 1, "zzz", 3, 7, S_IFREG);
	meta_batch_dentry_put(b, parent + 1, "", 0, 7, S_IFREG); /* poisoned: empty name */
	ck_assert_int_eq(meta_commit(m, b, false), -EINVAL);
	for (uint64_t i = 0; i < n; i++)
		meta_batch_dentry_put(b, parent, want[i], strlen(want[i]), 1000 + i, S_IFREG);
	meta_batch_dentry_put(b, parent - 1, "zzz", 3, 7, S_IFREG);
	meta_batch_dentry_put(b, parent + 1, "0", 1, 7, S_IFREG);
	meta_batch_dentry_put(b, UINT64_MAX, "last", 4, 8, S_IFREG);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	qsort(want, n, sizeof(want[0]), cmp_str);

	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(meta_dentry_list(m, parent, NULL, 0, collect_fn, &c), 0);
	ck_assert_int_eq(c.n, (int)n);
	for (uint64_t i = 0; i < n; i++)
		ck_assert_str_eq(c.names[i], want[i]);

	/* pages of 7, each continuing after the last name of the previous one */
	memset(&c, 0, sizeof(c));
	for (;;) {
		const char *after = c.n ? c.names[c.n - 1] : NULL;

		memset(&page, 0, sizeof(page));
		page.stop_after = 7;
		ck_assert_int_eq(meta_dentry_list(m, parent, after, after ? strlen(after) : 0,
						  collect_fn, &page),
				 0);
		for (int i = 0; i < page.n; i++)
			strcpy(c.names[c.n++], page.names[i]);
		if (page.n < 7)
			break;
	}
	ck_assert_int_eq(c.n, (int)n);
	for (uint64_t i = 0; i < n; i++)
		ck_assert_str_eq(c.names[i], want[i]);

	/* `after` need not exist: listing continues at the next name */
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(meta_dentry_list(m, parent, "m", 1, collect_fn, &c), 0);
	ck_assert_int_gt(c.n, 0);
	ck_assert_int_gt(strcmp(c.names[0], "m"), 0);

	/* the highest parent number has no upper neighbour */
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(meta_dentry_list(m, UINT64_MAX, NULL, 0, collect_fn, &c), 0);
	ck_assert_int_eq(c.n, 1);
	ck_assert_str_eq(c.names[0], "last");

	ck_assert_int_eq(meta_dir_has_entries(m, parent), 1);
	ck_assert_int_eq(meta_dir_has_entries(m, parent + 1), 1);
	ck_assert_int_eq(meta_dir_has_entries(m, parent + 2), 0);
	ck_assert_int_eq(meta_dir_has_entries(m, UINT64_MAX), 1);
	ck_assert_int_eq(meta_dir_has_entries(m, 2), 0);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

static int fail_fn(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	++*(int *)ctx;
	return -ENOSPC;
}

START_TEST(test_dentry_list_error)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	int calls = 0;

	meta_batch_dentry_put(b, 5, "a", 1, 9, S_IFREG);
	meta_batch_dentry_put(b, 5, "b", 1, 9, S_IFREG);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_dentry_list(m, 5, NULL, 0, fail_fn, &calls), -ENOSPC);
	ck_assert_int_eq(calls, 1);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

struct stripes {
	uint64_t idx[16];
	int n;
};

static int stripe_fn(void *ctx, uint64_t stripe, const struct meta_stripe *s)
{
	struct stripes *c = ctx;

	ck_assert_uint_eq(s->version, 0x1122334455667788ull);
	c->idx[c->n++] = stripe;
	return 0;
}

START_TEST(test_stripes)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	const uint64_t idx[] = { 0, 1, 2, 255, 256, UINT64_C(1) << 40 };
	struct meta_stripe s, out;
	struct stripes c = { 0 };

	stripe_fill(&s, 4, 2);
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(idx); i++)
		meta_batch_stripe_put(b, 42, idx[TESSERA_ARRAY_SIZE(idx) - 1 - i], &s);
	meta_batch_stripe_put(b, 41, 7, &s);
	meta_batch_stripe_put(b, 43, 0, &s);
	ck_assert_int_eq(meta_commit(m, b, true), 0);

	ck_assert_int_eq(meta_stripe_get(m, 42, 256, &out), 0);
	assert_stripe_eq(&s, &out);
	ck_assert_int_eq(meta_stripe_get(m, 42, 3, &out), -ENOENT);

	ck_assert_int_eq(meta_stripe_list(m, 42, 0, stripe_fn, &c), 0);
	ck_assert_int_eq(c.n, (int)TESSERA_ARRAY_SIZE(idx));
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(idx); i++)
		ck_assert_uint_eq(c.idx[i], idx[i]);
	memset(&c, 0, sizeof(c));
	ck_assert_int_eq(meta_stripe_list(m, 42, 3, stripe_fn, &c), 0);
	ck_assert_int_eq(c.n, 3);
	ck_assert_uint_eq(c.idx[0], 255);

	/* an inconsistent stripe never reaches the database */
	s.data_len = 4 * s.frag_len + 1;
	meta_batch_stripe_put(b, 42, 0, &s);
	ck_assert_int_eq(meta_commit(m, b, true), -EINVAL);
	ck_assert_int_eq(meta_stripe_get(m, 42, 0, &out), 0);
	ck_assert_uint_eq(out.data_len, 4 * 65536 - 5);

	meta_batch_stripe_del(b, 42, 256);
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	ck_assert_int_eq(meta_stripe_get(m, 42, 256, &out), -ENOENT);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

static int count_inode(void *ctx, const struct meta_inode *in)
{
	uint64_t *sum = ctx;

	*sum += in->ino;
	return 0;
}

static int xattr_fn(void *ctx, const char *name, size_t name_len, const void *value,
		    size_t value_len)
{
	char *out = ctx;

	ck_assert_uint_eq(strlen(name), name_len);
	sprintf(out + strlen(out), "%s=%.*s;", name, (int)value_len, (const char *)value);
	return 0;
}

/* The inline column family: small-file contents and symlink targets, atomically with the
 * inode; also present in a filesystem created before it existed (opened with
 * create_missing_column_families). */
START_TEST(test_inline)
{
	char dir[128], buf[64];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	static uint8_t big[META_INLINE_MAX + 1];
	size_t len = 0;

	ck_assert_int_eq(meta_inline_get(m, 5, buf, sizeof(buf), &len), -ENOENT);
	meta_batch_inline_put(b, 5, "contents", 8);
	meta_batch_inline_put(b, 6, NULL, 0);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_inline_get(m, 5, NULL, 0, &len), 0);
	ck_assert_uint_eq(len, 8);
	ck_assert_int_eq(meta_inline_get(m, 5, buf, 4, &len), -ERANGE);
	ck_assert_int_eq(meta_inline_get(m, 5, buf, sizeof(buf), &len), 0);
	ck_assert_mem_eq(buf, "contents", 8);
	ck_assert_int_eq(meta_inline_get(m, 6, buf, sizeof(buf), &len), 0);
	ck_assert_uint_eq(len, 0);

	/* Too large: the whole batch is refused, nothing of it written. */
	meta_batch_inline_del(b, 5);
	meta_batch_inline_put(b, 7, big, sizeof(big));
	ck_assert_int_eq(meta_commit(m, b, false), -EINVAL);
	meta_batch_free(b);
	b = meta_batch_new(m);
	ck_assert_int_eq(meta_inline_get(m, 5, buf, sizeof(buf), &len), 0);
	meta_batch_inline_del(b, 5);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_inline_get(m, 5, buf, sizeof(buf), &len), -ENOENT);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

/* Chunk sums: read back by (version, fragment, chunk); another version's sums are not
 * returned; they go with the stripe record. */
START_TEST(test_chunks)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	struct meta_stripe st = { .version = 7, .data_len = 100, .frag_len = 64, .k = 2, .m = 1,
				  .present = 7 };
	uint32_t crcs[6] = { 10, 11, 12, 20, 21, 22 }, v = 0;

	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 0, 0, &v), -ENOENT);
	meta_batch_stripe_put(b, 3, 0, &st);
	meta_batch_chunks_put(b, 3, 0, 7, 2, 3, crcs);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 0, 2, &v), 0);
	ck_assert_uint_eq(v, 12);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 1, 0, &v), 0);
	ck_assert_uint_eq(v, 20);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 8, 1, 0, &v), -ENOENT);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 2, 0, &v), -ENOENT);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 0, 3, &v), -ENOENT);
	meta_batch_stripe_del(b, 3, 0);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_chunk_crc_get(m, 3, 0, 7, 0, 0, &v), -ENOENT);
	meta_batch_chunks_put(b, 3, 0, 7, 0, 3, crcs); /* k = 0: refused */
	ck_assert_int_eq(meta_commit(m, b, false), -EINVAL);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

START_TEST(test_xattrs)
{
	char dir[128], buf[64], list[256] = "";
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	size_t len = 0;

	meta_batch_xattr_put(b, 9, "user.b", 6, "two", 3);
	meta_batch_xattr_put(b, 9, "user.a", 6, "one", 3);
	meta_batch_xattr_put(b, 9, "user.empty", 10, NULL, 0);
	meta_batch_xattr_put(b, 10, "user.a", 6, "other", 5);
	ck_assert_int_eq(meta_commit(m, b, false), 0);

	ck_assert_int_eq(meta_xattr_get(m, 9, "user.a", 6, NULL, 0, &len), 0);
	ck_assert_uint_eq(len, 3);
	ck_assert_int_eq(meta_xattr_get(m, 9, "user.a", 6, buf, 2, &len), -ERANGE);
	ck_assert_int_eq(meta_xattr_get(m, 9, "user.a", 6, buf, sizeof(buf), &len), 0);
	ck_assert_mem_eq(buf, "one", 3);
	ck_assert_int_eq(meta_xattr_get(m, 9, "user.empty", 10, buf, 0, &len), 0);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(meta_xattr_get(m, 9, "user.c", 6, buf, sizeof(buf), &len), -ENODATA);
	ck_assert_int_eq(meta_xattr_list(m, 9, xattr_fn, list), 0);
	ck_assert_str_eq(list, "user.a=one;user.b=two;user.empty=;");

	meta_batch_xattr_del(b, 9, "user.a", 6);
	ck_assert_int_eq(meta_commit(m, b, false), 0);
	ck_assert_int_eq(meta_xattr_get(m, 9, "user.a", 6, buf, sizeof(buf), &len), -ENODATA);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

/* ---- counters ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

START_TEST(test_alloc_ino_reopen)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	static uint64_t got[6000];
	uint64_t max = 0;
	int n = 0;

	/* invariant 3: more than one reserved range, then reopen three times */
	for (int round = 0; round < 3; round++) {
		uint64_t before = max;

		for (int i = 0; i < 1500 + round * 100; i++) {
			ck_assert_int_eq(meta_alloc_ino(m, &got[n]), 0);
			ck_assert_uint_gt(got[n], META_ROOT_INO);
			ck_assert_uint_gt(got[n], before);
			if (got[n] > max)
				max = got[n];
			n++;
		}
		meta_close(m);
		ck_assert_int_eq(meta_open(dir, &m), 0);
	}
	qsort(got, (size_t)n, sizeof(got[0]), cmp_u64);
	for (int i = 1; i < n; i++)
		ck_assert_uint_ne(got[i - 1], got[i]);
	meta_close(m);
}
END_TEST

struct alloc_thread {
	struct meta *m;
	uint64_t got[2000];
};

static void *alloc_thread_run(void *arg)
{
	struct alloc_thread *t = arg;

	for (int i = 0; i < 2000; i++)
		if (meta_alloc_ino(t->m, &t->got[i]) < 0)
			t->got[i] = 0;
	return NULL;
}

START_TEST(test_alloc_ino_threads)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	static struct alloc_thread t[4];
	static uint64_t all[8000];
	pthread_t th[4];
	int n = 0;

	for (int i = 0; i < 4; i++) {
		t[i].m = m;
		ck_assert_int_eq(pthread_create(&th[i], NULL, alloc_thread_run, &t[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		for (int j = 0; j < 2000; j++) {
			ck_assert_uint_ne(t[i].got[j], 0);
			all[n++] = t[i].got[j];
		}
	}
	qsort(all, (size_t)n, sizeof(all[0]), cmp_u64);
	for (int i = 1; i < n; i++)
		ck_assert_uint_ne(all[i - 1], all[i]);
	meta_close(m);
}
END_TEST

struct garbage_seen {
	uint64_t seq[64];
	struct meta_garbage g[64];
	int n;
};

static int garbage_fn(void *ctx, uint64_t seq, const struct meta_garbage *g)
{
	struct garbage_seen *s = ctx;

	s->seq[s->n] = seq;
	s->g[s->n++] = *g;
	return 0;
}

START_TEST(test_garbage)
{
	char dir[128];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	struct garbage_seen s = { 0 };
	uint64_t last;

	for (int i = 0; i < 10; i++) {
		struct meta_garbage g = { .ino = 50 + i, .stripe = i, .version = 3,
					  .index = (uint8_t)i, .server = (uint16_t)(i * 2) };
		meta_batch_garbage_add(b, &g);
	}
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	ck_assert_int_eq(meta_garbage_list(m, garbage_fn, &s), 0);
	ck_assert_int_eq(s.n, 10);
	for (int i = 0; i < 10; i++) {
		ck_assert_uint_eq(s.g[i].ino, 50 + i);
		ck_assert_uint_eq(s.g[i].index, i);
		ck_assert_uint_eq(s.g[i].server, i * 2);
		ck_assert_uint_eq(s.g[i].version, 3);
		if (i)
			ck_assert_uint_gt(s.seq[i], s.seq[i - 1]);
	}
	last = s.seq[9];

	for (int i = 0; i < 5; i++)
		meta_batch_garbage_del(b, s.seq[i]);
	ck_assert_int_eq(meta_commit(m, b, true), 0);

	/* invariant 4: after reopen, new entries sort after the queued ones */
	meta_batch_free(b);
	meta_close(m);
	ck_assert_int_eq(meta_open(dir, &m), 0);
	b = meta_batch_new(m);
	meta_batch_garbage_add(b, &(struct meta_garbage){ .ino = 99 });
	ck_assert_int_eq(meta_commit(m, b, true), 0);
	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(meta_garbage_list(m, garbage_fn, &s), 0);
	ck_assert_int_eq(s.n, 6);
	ck_assert_uint_eq(s.g[0].ino, 55);
	ck_assert_uint_eq(s.g[5].ino, 99);
	ck_assert_uint_gt(s.seq[5], last);
	meta_batch_free(b);
	meta_close(m);
}
END_TEST

START_TEST(test_persistence)
{
	char dir[128], buf[16];
	struct meta *m = fresh_fs(dir, sizeof(dir));
	struct meta_batch *b = meta_batch_new(m);
	struct meta_inode in = { .mode = S_IFREG | 0600, .uid = 7, .nlink = 1, .size = 12345,
				 .mtime_ns = 42 };
	struct meta_inode got;
	struct meta_stripe s, sg;
	uint64_t ino, sum = 0;
	uint32_t mode;
	size_t len;

	ck_assert_int_eq(meta_alloc_ino(m, &in.ino), 0);
	stripe_fill(&s, 4, 2);
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, META_ROOT_INO, "file", 4, in.ino, in.mode);
	meta_batch_stripe_put(b, in.ino, 0, &s);
	meta_batch_xattr_put(b, in.ino, "user.k", 6, "v", 1);
	ck_assert_int_eq(meta_commit(m, b, false), 0); /* unsynced: a clean close keeps it */
	meta_batch_free(b);
	meta_close(m);

	ck_assert_int_eq(meta_open(dir, &m), 0);
	ck_assert_int_eq(meta_dentry_get(m, META_ROOT_INO, "file", 4, &ino, &mode), 0);
	ck_assert_uint_eq(ino, in.ino);
	ck_assert_uint_eq(mode, S_IFREG);
	ck_assert_int_eq(meta_inode_get(m, ino, &got), 0);
	assert_inode_eq(&got, &in);
	ck_assert_int_eq(meta_stripe_get(m, ino, 0, &sg), 0);
	assert_stripe_eq(&sg, &s);
	ck_assert_int_eq(meta_xattr_get(m, ino, "user.k", 6, buf, sizeof(buf), &len), 0);
	ck_assert_uint_eq(len, 1);
	ck_assert_int_eq(meta_inode_list(m, count_inode, &sum), 0);
	ck_assert_uint_eq(sum, META_ROOT_INO + in.ino);
	meta_close(m);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("meta");
	TCase *tc = tcase_create("codec");

	tcase_add_test(tc, test_dentry_key_order);
	tcase_add_test(tc, test_stripe_key_order);
	tcase_add_test(tc, test_inode_codec);
	tcase_add_test(tc, test_stripe_codec);
	tcase_add_test(tc, test_stripe_codec_inconsistent);
	tcase_add_test(tc, test_superblock_codec);
	tcase_add_test(tc, test_superblock_invalid);
	tcase_add_test(tc, test_server_parse);
	suite_add_tcase(s, tc);

	tc = tcase_create("store");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mkfs_open);
	tcase_add_test(tc, test_open_errors);
	tcase_add_test(tc, test_open_bad_superblock);
	tcase_add_test(tc, test_batch_atomic);
	tcase_add_test(tc, test_dentry_list_continuation);
	tcase_add_test(tc, test_dentry_list_error);
	tcase_add_test(tc, test_stripes);
	tcase_add_test(tc, test_xattrs);
	tcase_add_test(tc, test_alloc_ino_reopen);
	tcase_add_test(tc, test_alloc_ino_threads);
	tcase_add_test(tc, test_garbage);
	tcase_add_test(tc, test_inline);
	tcase_add_test(tc, test_chunks);
	tcase_add_test(tc, test_persistence);
	tcase_add_test(tc, test_superblock_update);
	tcase_add_test(tc, test_list_all);
	tcase_add_test(tc, test_backup);
	tcase_add_test(tc, test_read_only);
	suite_add_tcase(s, tc);
	return s;
}
