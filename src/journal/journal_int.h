/*
 * journal internals shared by journal.c (the running journal), journal_obj.c (objects, the
 * catalog, replay) and journal_restore.c. Nothing here is visible outside src/journal/.
 */
#ifndef TESSERA_JOURNAL_INT_H
#define TESSERA_JOURNAL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/journal.h"

struct blockstore;
struct meta;

#define JHDR_LEN 40
#define JREC_HDR 16
#define JKEY_MAX 160
#define JMAX_HOLDERS 256
#define JMARKER_PREFIX "filesystems/"
#define JPART_BYTES (4u << 20) /* a checkpoint part holds about this much */

enum { JOBJ_SEG, JOBJ_PART, JOBJ_MANIFEST };

struct jobj_hdr {
	uint64_t epoch, seq, last;
	uint32_t count;
};

void jobj_header(uint8_t out[JHDR_LEN], int kind, uint64_t epoch, uint64_t seq, uint64_t last,
		 uint32_t count);
/* Writes one record (JREC_HDR + len bytes) at out. Returns its length. */
size_t jrec_encode(uint8_t *out, uint64_t seq, const void *payload, size_t len);
/* Checks the header of an object of kind. 0 and *h, or -EBADMSG. */
int jobj_check(const uint8_t *obj, size_t len, int kind, struct jobj_hdr *h);
/* Calls fn for each record (each checked by its crc): 0 continue, > 0 stop, < 0 error.
 * Returns 0, fn's error, -EBADMSG (a damaged or short record). */
typedef int (*jrec_fn)(void *ctx, uint64_t seq, const void *payload, size_t len);
int jobj_records(const uint8_t *obj, size_t len, const struct jobj_hdr *h, jrec_fn fn, void *ctx);

void jkey_prefix(char out[JKEY_MAX], const uint8_t uuid[16]);
void jkey_segment(char out[JKEY_MAX], const uint8_t uuid[16], uint64_t first, uint64_t last,
		  uint64_t epoch);
/* part < 0: the manifest. */
void jkey_ckpt(char out[JKEY_MAX], const uint8_t uuid[16], uint64_t seq, uint64_t epoch,
	       long part);
void jkey_marker(char out[JKEY_MAX], const uint8_t uuid[16]);

/* One object of the journal as the listings show it. */
struct jentry {
	int kind;
	uint64_t seq, last, epoch; /* as in the header; a part's index is in last */
	uint64_t size;
	int64_t mtime_s; /* the newest listing's LastModified */
	unsigned flags;
	uint64_t holders[JMAX_HOLDERS / 64]; /* bit s: server ids[s] lists it */
};
#define JE_BAD 0x1u /* no intact copy: skipped */

struct jcat {
	struct jentry *e; /* sorted by kind, seq, epoch, last */
	size_t n, cap;
	size_t answered;  /* servers whose listing completed */
};

/* Lists the journal objects of uuid on servers ids[0..n-1]. 0, -EIO (no server answered),
 * -ENOMEM. */
int jcat_list(struct jcat *c, struct blockstore *bs, const uint16_t *ids, size_t n,
	      const uint8_t uuid[16]);
void jcat_free(struct jcat *c);
int jobj_fetch(struct blockstore *bs, const uint16_t *ids, const struct jentry *e, const char *key,
	       int (*check)(void *ctx, const uint8_t *obj, size_t len), void *ctx, uint8_t **ret,
	       size_t *ret_len);

struct jreplay_stats {
	uint64_t records, segments;
};
/* Applies to meta the records after (*epoch, *seq) that the catalog's segments hold, in order,
 * from epochs *epoch..max_epoch (a later epoch wins from its first record on), while they follow
 * each other; *epoch and *seq move with them. why gets the reason it stopped before the last
 * segment ("" when it did not). Returns 0, -ESTALE (a later epoch does not start right after
 * the state reached: why says so; the state stays as it was), -ENOMEM, or the store's error. */
int jreplay(struct meta *meta, struct blockstore *bs, const uint16_t *ids, const struct jcat *c,
	    const uint8_t uuid[16], uint64_t *epoch, uint64_t *seq, uint64_t max_epoch,
	    struct jreplay_stats *st, char *why, size_t why_size);

#endif
