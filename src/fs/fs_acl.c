/*
 * fs_acl: the POSIX ACL xattr codec (FUSE_CAP_POSIX_ACL). The kernel enforces ACLs from the
 * system.posix_acl_* xattrs; this layer keeps the mode bits in sync with an access ACL
 * (setxattr and chmod), does not store an access ACL that the mode expresses exactly,
 * applies the umask itself (the kernel leaves it to us on an ACL mount) and inherits default
 * ACLs on create. The value format is the kernel's: a 4-byte version header, then 8-byte
 * entries (tag, permissions, id), little-endian.
 */
#include "fs_int.h"

#include <errno.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- POSIX ACL xattrs */

/* The xattr form of an ACL (Linux posix_acl_xattr.h): le32 version 2, then entries of
 * le16 tag, le16 perm, le32 id. */
#define ACL_VERSION 2u
#define ACL_USER_OBJ 0x01u
#define ACL_USER 0x02u
#define ACL_GROUP_OBJ 0x04u
#define ACL_GROUP 0x08u
#define ACL_MASK 0x10u
#define ACL_OTHER 0x20u

static uint16_t le16_get(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void le16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* Returns the number of entries, or -EINVAL for a malformed value. */
int fs_acl_count(const uint8_t *v, size_t len)
{
	if (len < 4 || (len - 4) % 8 != 0)
		return -EINVAL;
	if ((uint32_t)(v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24) != ACL_VERSION)
		return -EINVAL;
	return (int)((len - 4) / 8);
}

/* posix_acl_equiv_mode(): *ret_perm gets the rwx bits the ACL means for the mode (mask in
 * place of the group bits). Returns 0 when the mode expresses the ACL exactly, 1 when the ACL
 * has more (named entries, a mask), -EINVAL. */
int fs_acl_equiv_mode(const uint8_t *v, size_t len, uint32_t *ret_perm)
{
	int n = fs_acl_count(v, len), not_equiv = 0;
	uint32_t mode = 0, seen = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		const uint8_t *e = v + 4 + 8 * i;
		uint32_t tag = le16_get(e), perm = le16_get(e + 2) & 7u;
		switch (tag) {
		case ACL_USER_OBJ:
			mode |= perm << 6;
			break;
		case ACL_GROUP_OBJ:
			if (!(seen & ACL_MASK))
				mode = (mode & ~070u) | perm << 3;
			break;
		case ACL_OTHER:
			mode |= perm;
			break;
		case ACL_MASK:
			mode = (mode & ~070u) | perm << 3;
			not_equiv = 1;
			break;
		case ACL_USER:
		case ACL_GROUP:
			not_equiv = 1;
			break;
		default:
			return -EINVAL;
		}
		seen |= tag;
	}
	if ((seen & (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER)) !=
	    (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER))
		return -EINVAL;
	*ret_perm = mode;
	return not_equiv;
}

/* posix_acl_create_masq(): masks the inherited ACL v (in place) with the requested mode
 * and the mode with the ACL. Returns 0 (the mode alone expresses the ACL), 1, -EINVAL. */
int fs_acl_create_masq(uint8_t *v, size_t len, uint32_t *mode_p)
{
	int n = fs_acl_count(v, len), not_equiv = 0;
	uint32_t mode = *mode_p;
	uint8_t *group_obj = NULL, *mask_obj = NULL;

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;
		uint32_t perm = le16_get(e + 2);
		switch (le16_get(e)) {
		case ACL_USER_OBJ:
			perm &= (mode >> 6) | ~7u;
			mode &= (perm << 6) | ~0700u;
			le16_put(e + 2, (uint16_t)perm);
			break;
		case ACL_USER:
		case ACL_GROUP:
			not_equiv = 1;
			break;
		case ACL_GROUP_OBJ:
			group_obj = e;
			break;
		case ACL_OTHER:
			perm &= mode | ~7u;
			mode &= perm | ~07u;
			le16_put(e + 2, (uint16_t)perm);
			break;
		case ACL_MASK:
			mask_obj = e;
			not_equiv = 1;
			break;
		default:
			return -EINVAL;
		}
	}
	uint8_t *g = mask_obj ? mask_obj : group_obj;
	if (!g)
		return -EINVAL;
	uint32_t perm = le16_get(g + 2);
	perm &= (mode >> 3) | ~7u;
	mode &= (perm << 3) | ~070u;
	le16_put(g + 2, (uint16_t)perm);
	*mode_p = (*mode_p & ~0777u) | (mode & 0777u);
	return not_equiv;
}

/* posix_acl_chmod(): the owner, mask (or group) and other entries follow a new mode. */
void fs_acl_chmod(uint8_t *v, size_t len, uint32_t mode)
{
	int n = fs_acl_count(v, len);
	uint8_t *group_obj = NULL, *mask_obj = NULL;

	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;
		switch (le16_get(e)) {
		case ACL_USER_OBJ:
			le16_put(e + 2, (uint16_t)((mode >> 6) & 7u));
			break;
		case ACL_GROUP_OBJ:
			group_obj = e;
			break;
		case ACL_MASK:
			mask_obj = e;
			break;
		case ACL_OTHER:
			le16_put(e + 2, (uint16_t)(mode & 7u));
			break;
		}
	}
	if (mask_obj)
		le16_put(mask_obj + 2, (uint16_t)((mode >> 3) & 7u));
	else if (group_obj)
		le16_put(group_obj + 2, (uint16_t)((mode >> 3) & 7u));
}

/* Reads xattr name of ino into a new buffer (free()). Returns 0, -ENODATA, -ENOMEM, -EIO. */
int fs_xattr_read(struct fs *fs, uint64_t ino, const char *name, uint8_t **ret,
		  size_t *ret_len)
{
	size_t len;
	uint8_t *buf;
	int r = meta_xattr_get(fs->meta, ino, name, strlen(name), NULL, 0, &len);

	if (r < 0)
		return r;
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	r = meta_xattr_get(fs->meta, ino, name, strlen(name), buf, len, &len);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
