/*
 * fs_lookup: the kernel's lookup counts. They live in a hash table (fs->lk, open addressing
 * with linear probing, its own leaf mutex lk_lock, taken after the inode lock when both are
 * held): every reply that hands the kernel an entry (lookup, create, mknod, mkdir, symlink,
 * link, readdirplus) counts one, forget subtracts. An inode whose count is zero and that has
 * no name and no open handle goes to the reaper (fs.c).
 */
#include "fs_int.h"

#include <errno.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- lookup counts */

static size_t lk_home(uint64_t ino, size_t mask)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 24) & mask;
}

/* With lk_lock held. Returns the slot of ino or of the empty slot where it would go. */
static size_t lk_find(const struct fs *fs, uint64_t ino)
{
	size_t mask = fs->lk_cap - 1, i = lk_home(ino, mask);

	while (fs->lk[i].ino && fs->lk[i].ino != ino)
		i = (i + 1) & mask;
	return i;
}

int fs_lk_grow(struct fs *fs)
{
	size_t cap = fs->lk_cap ? fs->lk_cap * 2 : 4096;
	struct lk_slot *old = fs->lk, *t = calloc(cap, sizeof(*t));
	size_t ocap = fs->lk_cap;

	if (!t)
		return -ENOMEM;
	fs->lk = t;
	fs->lk_cap = cap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].ino)
			fs->lk[lk_find(fs, old[i].ino)] = old[i];
	free(old);
	return 0;
}

/* Removes slot i (backward-shift deletion: no tombstones). With lk_lock held. */
static void lk_del_at(struct fs *fs, size_t i)
{
	size_t mask = fs->lk_cap - 1, j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (!fs->lk[j].ino)
			break;
		size_t k = lk_home(fs->lk[j].ino, mask);
		/* the entry at j may move to i unless its home lies cyclically in (i, j] */
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (!stays) {
			fs->lk[i] = fs->lk[j];
			i = j;
		}
	}
	fs->lk[i].ino = 0;
	fs->lk[i].n = 0;
	fs->lk_n--;
}

/* Counts n kernel lookups of ino. Returns 0 or -ENOMEM. */
int fs_lk_ref(struct fs *fs, uint64_t ino, uint64_t n)
{
	int r = 0;
	size_t i;

	if (ino == META_ROOT_INO)
		return 0;
	pthread_mutex_lock(&fs->lk_lock);
	if ((fs->lk_n + 1) * 4 > fs->lk_cap * 3) {
		r = fs_lk_grow(fs);
		if (r < 0)
			goto out;
	}
	i = lk_find(fs, ino);
	if (!fs->lk[i].ino) {
		fs->lk[i].ino = ino;
		fs->lk_n++;
	}
	fs->lk[i].n += n;
out:
	pthread_mutex_unlock(&fs->lk_lock);
	return r;
}

/* Drops n lookups of ino; returns the lookups left. */
uint64_t fs_lk_unref(struct fs *fs, uint64_t ino, uint64_t n)
{
	uint64_t left = 0;
	size_t i;

	if (ino == META_ROOT_INO)
		return 1;
	pthread_mutex_lock(&fs->lk_lock);
	if (fs->lk_cap) {
		i = lk_find(fs, ino);
		if (fs->lk[i].ino) {
			if (fs->lk[i].n > n) {
				fs->lk[i].n -= n;
				left = fs->lk[i].n;
			} else {
				lk_del_at(fs, i);
			}
		}
	}
	pthread_mutex_unlock(&fs->lk_lock);
	return left;
}

bool fs_lk_held(struct fs *fs, uint64_t ino)
{
	bool held = false;

	if (ino == META_ROOT_INO)
		return true;
	pthread_mutex_lock(&fs->lk_lock);
	if (fs->lk_cap)
		held = fs->lk[lk_find(fs, ino)].ino != 0;
	pthread_mutex_unlock(&fs->lk_lock);
	return held;
}
