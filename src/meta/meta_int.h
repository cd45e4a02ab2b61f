/*
 * meta internals shared by meta.c (the RocksDB store) and meta_record.c (keys and record
 * encodings). Nothing here is visible outside src/meta/.
 */
#ifndef TESSERA_META_INT_H
#define TESSERA_META_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tessera/meta.h"

/* Record versions: the first byte of every encoded value. */
#define META_REC_INODE_V1 1
#define META_REC_STRIPE_V1 1
#define META_REC_GARBAGE_V1 1
#define META_REC_SUPERBLOCK_V1 1
#define META_REC_SUPERBLOCK_V2 2 /* V1 + inline_max after write_quorum */
#define META_REC_SUPERBLOCK_V3 3 /* V2 + flags(4) after each server's weight */
#define META_INLINE_DEFAULT 4096 /* inline_max of a V1 superblock */

#define META_GARBAGE_ENC_SIZE 28
#define META_DENTRY_VAL_SIZE 12 /* child ino(8) + S_IFMT bits(4) */
#define META_DENTRY_KEY_MAX (8 + META_NAME_MAX)
#define META_XATTR_KEY_MAX (8 + META_XATTR_NAME_MAX)

size_t meta_garbage_encode(const struct meta_garbage *g, uint8_t out[META_GARBAGE_ENC_SIZE]);
int meta_garbage_decode(const uint8_t *buf, size_t len, struct meta_garbage *ret);

#endif
