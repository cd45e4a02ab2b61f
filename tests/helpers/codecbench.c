/*
 * codecbench: the erasure codec's own throughput, so that a benchmark shows whether the
 * codec or the I/O is the bottleneck.
 *
 *   codecbench [K M [STRIPE_BYTES [SECONDS]]]      default 4 2 4194304 1
 *
 * Prints `name value unit` lines: encode and decode (two data fragments lost) throughput in
 * MB/s of stripe data, and crc32c throughput.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/codec.h"
#include "tessera/common.h"

static double now_s(void)
{
	return (double)tclock_monotonic_ns() / 1e9;
}

int main(int argc, char **argv)
{
	unsigned k = argc > 2 ? (unsigned)atoi(argv[1]) : 4, m = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
	size_t stripe = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 4u << 20;
	double secs = argc > 4 ? atof(argv[4]) : 1.0;
	struct codec *c;
	uint8_t *frags[64], *buf;
	size_t fl;
	double t0, t;
	unsigned long iters;
	volatile uint32_t sink = 0;

	if (codec_new(k, m, &c) < 0) {
		fprintf(stderr, "codecbench: bad geometry %u+%u\n", k, m);
		return 2;
	}
	fl = codec_frag_len(c, stripe);
	buf = malloc((k + m) * fl);
	if (!buf)
		return 1;
	for (size_t i = 0; i < (k + m) * fl; i++)
		buf[i] = (uint8_t)(i * 2654435761u >> 13);
	for (unsigned i = 0; i < k + m; i++)
		frags[i] = buf + i * fl;

	for (iters = 0, t0 = now_s(); (t = now_s() - t0) < secs; iters++)
		codec_encode(c, frags, frags + k, fl);
	printf("codec_encode_%u_%u %.0f MB/s\n", k, m, (double)iters * k * fl / t / 1e6);

	uint64_t all = (1ull << (k + m)) - 1, lost = m >= 2 ? 3 : 1;
	for (iters = 0, t0 = now_s(); (t = now_s() - t0) < secs; iters++)
		codec_decode(c, frags, all & ~lost, lost, fl);
	printf("codec_decode_%u_%u %.0f MB/s\n", k, m, (double)iters * k * fl / t / 1e6);

	for (iters = 0, t0 = now_s(); (t = now_s() - t0) < secs; iters++)
		sink += tcrc32c(0, buf, k * fl);
	printf("crc32c %.0f MB/s\n", (double)iters * k * fl / t / 1e6);
	(void)sink;
	free(buf);
	codec_free(c);
	return 0;
}
