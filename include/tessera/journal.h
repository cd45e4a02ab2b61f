/*
 * journal: the metadata journal on the filesystem's own block servers (doc/metadata.md).
 *
 * Every committed metadata batch becomes a record (epoch, sequence, its ops, a crc32c); records
 * are grouped into segments, each segment stored whole on m+1 servers (replicated, not erasure
 * coded: a segment is small, and a restore must read it from any one server). Synced commits
 * wait for their record's segment (group commit: every record waiting at that moment travels in
 * one segment); the others reach the servers within the interval. A checkpoint (the whole store
 * dumped at one sequence number, in parts, with a manifest written last) is taken at the first
 * start and after every checkpoint_bytes of journal; the segments and checkpoints a newer
 * checkpoint covers are then deleted. A restore reads the newest complete checkpoint and the
 * segments after it, and stops at the last complete record.
 *
 * Objects, all under the filesystem's uuid (so the scrubber's garbage collector, which takes only
 * fragment keys, never touches them), plus one marker per filesystem:
 *   <uuid>/journal/seg-<first seq>-<last seq>-<epoch>         (16 hex digits each)
 *   <uuid>/journal/ckpt-<seq>-<epoch>-<part, 6 decimal digits>
 *   <uuid>/journal/ckpt-<seq>-<epoch>-manifest
 *   filesystems/<uuid>                                          (what a restore lists)
 *
 * Thread-safety: journal_status() from any thread; start and stop from one.
 */
#ifndef TESSERA_JOURNAL_H
#define TESSERA_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blockstore;
struct journal;
struct meta;

struct journal_config {
	unsigned interval_ms;    /* unsynced records reach the servers within this (0: 1000) */
	uint64_t checkpoint_bytes; /* journal bytes between checkpoints (0: 64 MiB) */
	bool takeover;           /* start even when a later epoch than the local one wrote */
};

/* Starts the journal of meta on bs: lists what the servers hold, applies to meta the records
 * of its own epoch that it lacks (a crash lost them from the local WAL after they had reached
 * the servers), claims the next epoch, attaches itself to meta (meta_journal_attach) and starts
 * its threads. The first checkpoint is written in the background. Returns 0 and *ret, -ESTALE
 * (a later epoch wrote the journal since this metadata was last used: it is an old copy;
 * cfg->takeover overrides), -EIO (a segment to replay could not be read), -ENOMEM, -EAGAIN. */
int journal_start(struct meta *meta, struct blockstore *bs, const struct journal_config *cfg,
		  struct journal **ret);
/* Stores what is pending, detaches from meta and stops. Accepts NULL. */
void journal_stop(struct journal *j);

struct journal_status {
	uint64_t epoch;
	uint64_t last_seq;     /* last record committed */
	uint64_t durable_seq;  /* last record on the servers */
	uint64_t ckpt_seq;     /* the newest complete checkpoint (0: none yet) */
	uint64_t ckpt_time_ns; /* when it was written (realtime) */
	uint64_t segments, segment_bytes, puts; /* written since start */
	uint64_t copies_short; /* segments stored on fewer than m+1 servers */
	int error;             /* the last store's error (0: none) */
	unsigned copies;       /* servers per segment */
};
void journal_status(struct journal *j, struct journal_status *ret);

/* ---- restore ---- */

struct journal_restore_info {
	uint64_t epoch, seq;    /* the position restored: last record applied */
	uint64_t ckpt_seq;      /* the checkpoint it started from */
	uint64_t ckpt_time_ns;
	uint64_t records;       /* journal records applied after the checkpoint */
	uint64_t segments;
	char stop[256];         /* why it stopped where it did ("" at the end of the journal) */
};

/* The filesystem uuids whose marker the servers hold (union over ids). Returns how many (at
 * most max go to uuids), or -EIO when no server answered. */
int journal_list_filesystems(struct blockstore *bs, const uint16_t *ids, size_t n,
			     uint8_t (*uuids)[16], size_t max);
/* Rebuilds the metadata of filesystem uuid into dir (a new database: meta_create_empty()) from
 * the servers ids[0..n-1] alone: the newest checkpoint whose manifest and parts are intact on
 * some server, then every journal record after it while they follow each other. Returns 0 and
 * *ret, -ENOENT (no complete checkpoint), -EEXIST, -EIO, -ENOMEM; err gets a reason. */
int journal_restore(struct blockstore *bs, const uint16_t *ids, size_t n, const uint8_t uuid[16],
		    const char *dir, struct journal_restore_info *ret, char *err, size_t err_size);

#endif
