/*
 * datagen: writes and verifies files whose bytes derive from (seed, offset), so the end-to-end
 * tests check a file without keeping a reference copy, and a mismatch names its stripe.
 *
 *   datagen write FILE SIZE [SEED]    write SIZE bytes in 1 MiB writes, fsync, close
 *   datagen verify FILE SIZE [SEED]   check the size and every byte
 *   datagen randverify FILE SIZE [SEED]  pread DATAGEN_READS (default 300) blocks of 1 byte to
 *                                     8 KiB at random offsets (the small random reads that
 *                                     fetch part of one fragment) and check each
 *   datagen byte OFFSET [SEED]        print the expected byte at OFFSET (two hex digits)
 *
 * SIZE and OFFSET accept binary units ("4M", "64k"); SEED is a decimal or 0x number (default 1).
 * The 8 bytes at an 8-byte aligned offset o are the little-endian form of mix(seed, o / 8),
 * a splitmix64-style finaliser: every 8-byte word of every file of every seed differs.
 * A mismatch report names the stripe (DATAGEN_STRIPE_SIZE, default 4M) and the data fragment
 * holding the byte (DATAGEN_K, default 4: fragment = offset within the stripe / (stripe / k)).
 *
 * Exit status: 0 success; 1 wrong size or wrong bytes, or any write error; 2 usage;
 * 3 a read error (the errno is printed: EIO is what a degraded read beyond m losses must give).
 * Single-threaded; uses libc and tparse_size() from tessera/common.h only.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/common.h"

#define DATAGEN_CHUNK (1u << 20)

static uint64_t datagen_mix(uint64_t seed, uint64_t word)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + word * 0xd1b54a32d192ed03ull + 0x632be59bd9b4e019ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint8_t datagen_byte(uint64_t seed, uint64_t off)
{
	return (uint8_t)(datagen_mix(seed, off / 8) >> (8 * (off % 8)));
}

/* Fills buf with the len bytes that belong at file offset off. */
static void datagen_fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i = 0;

	while (i < len && (off + i) % 8 != 0) {
		buf[i] = datagen_byte(seed, off + i);
		i++;
	}
	while (len - i >= 8) {
		uint64_t v = datagen_mix(seed, (off + i) / 8);

		for (int b = 0; b < 8; b++, v >>= 8)
			buf[i + b] = (uint8_t)v;
		i += 8;
	}
	while (i < len) {
		buf[i] = datagen_byte(seed, off + i);
		i++;
	}
}

static uint64_t datagen_env_size(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	uint64_t v;

	if (!s || !*s || tparse_size(s, &v) < 0 || v == 0)
		return def;
	return v;
}

static int datagen_write(const char *path, uint64_t size, uint64_t seed)
{
	uint8_t *buf = malloc(DATAGEN_CHUNK);
	uint64_t off = 0;
	int fd = -1, rc = 1;

	if (!buf) {
		fprintf(stderr, "datagen: out of memory\n");
		return 1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "datagen: cannot open '%s': %s\n", path, strerror(errno));
		goto out;
	}
	while (off < size) {
		size_t len = (size_t)TESSERA_MIN((uint64_t)DATAGEN_CHUNK, size - off);
		size_t done = 0;

		datagen_fill(seed, off, buf, len);
		while (done < len) {
			ssize_t n = write(fd, buf + done, len - done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, "datagen: write '%s' at offset %" PRIu64 ": %s\n", path,
					off + done, n < 0 ? strerror(errno) : "wrote nothing");
				goto out;
			}
			done += (size_t)n;
		}
		off += len;
	}
	if (fsync(fd) < 0) {
		fprintf(stderr, "datagen: fsync '%s': %s\n", path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0 && close(fd) < 0 && rc == 0) {
		fprintf(stderr, "datagen: close '%s': %s\n", path, strerror(errno));
		rc = 1;
	}
	free(buf);
	return rc;
}

static int datagen_verify(const char *path, uint64_t size, uint64_t seed)
{
	uint64_t stripe = datagen_env_size("DATAGEN_STRIPE_SIZE", 4u << 20);
	uint64_t k = datagen_env_size("DATAGEN_K", 4);
	uint8_t *buf = malloc(DATAGEN_CHUNK), *want = malloc(DATAGEN_CHUNK);
	uint64_t off = 0, bad = 0, first_bad = 0, last_bad = 0;
	uint8_t first_got = 0, first_want = 0;
	struct stat st;
	int fd = -1, rc = 1;

	if (!buf || !want) {
		fprintf(stderr, "datagen: out of memory\n");
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "datagen: cannot open '%s': %s\n", path, strerror(errno));
		rc = errno == EIO ? 3 : 1;
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "datagen: stat '%s': %s\n", path, strerror(errno));
		rc = errno == EIO ? 3 : 1;
		goto out;
	}
	if ((uint64_t)st.st_size != size) {
		fprintf(stderr, "datagen: '%s' has size %jd, expected %" PRIu64 "\n", path,
			(intmax_t)st.st_size, size);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, DATAGEN_CHUNK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "datagen: read '%s' at offset %" PRIu64 " (stripe %" PRIu64 "): %s\n",
				path, off, off / stripe, strerror(errno));
			rc = 3;
			goto out;
		}
		if (n == 0)
			break;
		if (off + (uint64_t)n > size) {
			fprintf(stderr, "datagen: '%s' reads past its size %" PRIu64 "\n", path, size);
			goto out;
		}
		datagen_fill(seed, off, want, (size_t)n);
		if (memcmp(buf, want, (size_t)n) != 0) {
			for (size_t i = 0; i < (size_t)n; i++) {
				if (buf[i] == want[i])
					continue;
				if (bad == 0) {
					first_bad = off + i;
					first_got = buf[i];
					first_want = want[i];
				}
				last_bad = off + i;
				bad++;
			}
		}
		off += (uint64_t)n;
	}
	if (off != size) {
		fprintf(stderr, "datagen: '%s' ends at %" PRIu64 ", expected %" PRIu64 "\n", path, off,
			size);
		goto out;
	}
	if (bad) {
		uint64_t in_stripe = first_bad % stripe;
		uint64_t frag_len = (stripe + k - 1) / k;

		fprintf(stderr,
			"datagen: '%s' wrong data: first bad byte at offset %" PRIu64
			" (stripe %" PRIu64 " of %" PRIu64 " bytes, offset %" PRIu64
			" in it, data fragment %" PRIu64 " for k=%" PRIu64 "): got 0x%02x, want 0x%02x; "
			"%" PRIu64 " bad bytes, last at offset %" PRIu64 " (stripe %" PRIu64 ")\n",
			path, first_bad, first_bad / stripe, stripe, in_stripe, in_stripe / frag_len, k,
			first_got, first_want, bad, last_bad, last_bad / stripe);
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(want);
	return rc;
}

static int datagen_randverify(const char *path, uint64_t size, uint64_t seed)
{
	uint64_t reads = datagen_env_size("DATAGEN_READS", 300), rng = seed ^ 0x5eed;
	uint8_t buf[8192], want[8192];
	int fd, rc = 1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "datagen: cannot open '%s': %s\n", path, strerror(errno));
		return errno == EIO ? 3 : 1;
	}
	for (uint64_t i = 0; i < reads && size > 0; i++) {
		rng = datagen_mix(rng, i);
		uint64_t off = rng % size;
		size_t len = (size_t)TESSERA_MIN((uint64_t)(datagen_mix(rng, 1) % sizeof(buf)) + 1,
						 size - off);
		ssize_t n = pread(fd, buf, len, (off_t)off);
		if (n < 0) {
			fprintf(stderr, "datagen: pread '%s' at %" PRIu64 ": %s\n", path, off,
				strerror(errno));
			rc = 3;
			goto out;
		}
		datagen_fill(seed, off, want, len);
		if ((size_t)n != len || memcmp(buf, want, len) != 0) {
			fprintf(stderr, "datagen: '%s' wrong data in a read of %zu bytes at offset %" PRIu64
				" (got %zd bytes)\n", path, len, off, n);
			goto out;
		}
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static int datagen_parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-')
		return -EINVAL;
	*ret = v;
	return 0;
}

static int datagen_usage(void)
{
	fprintf(stderr, "usage: datagen write FILE SIZE [SEED]\n"
			"       datagen verify FILE SIZE [SEED]\n"
			"       datagen randverify FILE SIZE [SEED]\n"
			"       datagen byte OFFSET [SEED]\n");
	return 2;
}

int main(int argc, char **argv)
{
	uint64_t size, seed = 1;

	if (argc >= 3 && strcmp(argv[1], "byte") == 0) {
		if (argc > 4 || tparse_size(argv[2], &size) < 0 ||
		    (argc == 4 && datagen_parse_u64(argv[3], &seed) < 0))
			return datagen_usage();
		printf("%02x\n", datagen_byte(seed, size));
		return 0;
	}
	if (argc < 4 || argc > 5)
		return datagen_usage();
	if (tparse_size(argv[3], &size) < 0) {
		fprintf(stderr, "datagen: bad size '%s'\n", argv[3]);
		return 2;
	}
	if (argc == 5 && datagen_parse_u64(argv[4], &seed) < 0) {
		fprintf(stderr, "datagen: bad seed '%s'\n", argv[4]);
		return 2;
	}
	if (strcmp(argv[1], "write") == 0)
		return datagen_write(argv[2], size, seed);
	if (strcmp(argv[1], "verify") == 0)
		return datagen_verify(argv[2], size, seed);
	if (strcmp(argv[1], "randverify") == 0)
		return datagen_randverify(argv[2], size, seed);
	return datagen_usage();
}
