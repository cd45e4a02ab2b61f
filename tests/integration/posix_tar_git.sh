#!/usr/bin/env bash
# posix_tar_git: tar and git in a mounted tesserafs (issue 6).
#
# tar: a generated tree (files from 0 bytes to a few stripes, symlinks, hard links, odd modes,
# owners, nanosecond and pre-1970 times, xattrs, ACLs) goes in through `tar -x --xattrs --acls`;
# the sha256 of every file and a listing of every inode's type, mode, links, owner, size,
# time and target match the source; the tree archived again from the mount and extracted on
# the local disk matches too.
# git: ~2000 small files in the mount, git init / add / commit, git fsck --full, a second
# commit that renames and deletes, git gc (packs, unlinks loose objects); `git status`
# is clean and `git diff-files` finds no changed stat data, before and after a remount, and
# git fsck passes again after it.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

for t in tar git sha256sum; do
	command -v "$t" >/dev/null || lib_skip "$t is not installed"
done
GIT_FILES=${POSIX_GIT_FILES:-2000}

lib_init
lib_up --servers 3 --k 2 --m 1
M=$TESSERA_MNT
SRC=$LIB_WORK/src
BACK=$LIB_WORK/back
ROOT=0
[[ $(id -u) == 0 ]] && ROOT=1
# Parts of the tar tree that need more than tar: each missing one makes the test end as skipped.
((ROOT)) || lib_skip_case "tar tree: owners and the ACL need root"
command -v setfattr >/dev/null && command -v getfattr >/dev/null ||
	lib_skip_case "tar tree: xattrs need setfattr and getfattr (attr)"
((ROOT)) && ! command -v setfacl >/dev/null && lib_skip_case "tar tree: the ACL needs setfacl (acl)"

# ---- tar
gen_tree() {
	local d=$1 i
	mkdir -p "$d"/{docs,bin,data/deep/er,links}
	for i in $(seq 1 60); do
		head -c $((i * 997 % 20000)) /dev/urandom >"$d/docs/file$i"
	done
	head -c 5000000 /dev/urandom >"$d/data/five-megabytes"
	: >"$d/data/empty"
	printf '#!/bin/sh\necho hi\n' >"$d/bin/tool" && chmod 0755 "$d/bin/tool"
	echo secret >"$d/data/private" && chmod 0600 "$d/data/private"
	echo x >"$d/data/setuid" && chmod 4755 "$d/data/setuid"
	mkdir "$d/data/sticky" && chmod 1777 "$d/data/sticky"
	echo deep >"$d/data/deep/er/leaf"
	ln -s ../docs/file1 "$d/links/rel"
	ln -s /nonexistent/target "$d/links/dangling"
	ln "$d/docs/file2" "$d/links/hard"
	echo 'ünïcødé 日本語' >"$d/docs/ünïcødé 日本語 name"
	touch -d '@1234567890.123456789' "$d/docs/file3"
	touch -d '1965-03-04 05:06:07' "$d/docs/file4"
	if command -v setfattr >/dev/null; then
		setfattr -n user.note -v "kept by tar" "$d/docs/file5"
		setfattr -n user.bin -v 0x0001fffe "$d/data/empty"
	fi
	if ((ROOT)); then
		chown 1000:1000 "$d/docs/file6"
		chown -h 4321:8765 "$d/links/rel"
		command -v setfacl >/dev/null && setfacl -m u:1000:r-- "$d/docs/file7"
	fi
}

# sha256 of every regular file, by path
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
# one line per inode: path type mode links owner size (not of directories: every filesystem
# has its own) mtime(ns) target
listing() {
	(cd "$1" && find . -mindepth 1 \( -type d -printf '%p %y %m %n %U:%G - %T@\n' \) -o \
		-printf '%p %y %m %n %U:%G %s %T@ %l\n' | sort)
}
# every xattr, one line per file, in path order
xattrs() {
	command -v getfattr >/dev/null || return 0
	(cd "$1" && getfattr -R -h -d -m - . 2>/dev/null) |
		awk 'BEGIN { RS = ""; FS = "\n" } { $1 = $1; print }' | sort
}
# DESC A B: the sums, listings and xattrs of two trees are equal
same_tree() {
	local desc=$1 a=$2 b=$3
	check "$desc: sha256 of every file" test "$(sums "$a")" == "$(sums "$b")"
	if [[ $(listing "$a") == "$(listing "$b")" ]]; then
		ok "$desc: types, modes, links, owners, sizes, times, targets"
	else
		fail "$desc: listings differ"
		diff <(listing "$a") <(listing "$b") | head -n 10 | sed 's/^/#   /'
	fi
	check "$desc: xattrs and ACLs" test "$(xattrs "$a")" == "$(xattrs "$b")"
}

TAR_OPTS=(--xattrs --xattrs-include='*' --acls --numeric-owner)
gen_tree "$SRC" || bail "cannot generate the tree"
mkdir -p "$M/tar" "$BACK"
check "tar -x into the mount" bash -c \
	"tar -C '$SRC' -cf - ${TAR_OPTS[*]@Q} . | tar -C '$M/tar' -xpf - ${TAR_OPTS[*]@Q}"
# the extraction set the top directory's time last; copy it for the listing
touch -r "$SRC" "$M/tar"
same_tree "tar into the mount" "$SRC" "$M/tar"
check "tar -c from the mount, -x on the local disk" bash -c \
	"tar -C '$M/tar' -cf '$LIB_WORK/back.tar' ${TAR_OPTS[*]@Q} . &&
	 tar -C '$BACK' -xpf '$LIB_WORK/back.tar' ${TAR_OPTS[*]@Q}"
same_tree "tar out of the mount" "$SRC" "$BACK"

# ---- git
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.invalid GIT_COMMITTER_NAME=t \
	GIT_COMMITTER_EMAIL=t@example.invalid GIT_CONFIG_NOSYSTEM=1 HOME=$LIB_WORK
git config --global init.defaultBranch main
git config --global safe.directory '*'
R=$M/repo
gen_repo() {
	local i j
	for i in $(seq 0 39); do for j in $(seq 0 6); do mkdir -p "$1/dir$i/sub$j"; done; done
	awk -v n="$GIT_FILES" -v r="$1" 'BEGIN {
		for (i = 0; i < n; i++) {
			f = sprintf("%s/dir%d/sub%d/f%d.txt", r, i % 40, i % 7, i)
			printf "file %d\n", i > f
			for (k = i; k <= i + i % 13; k++)
				print k > f
			close(f)
		}
	}'
}
lib_time_ms gen_repo "$R"
ok "$GIT_FILES files written in the mount ($LIB_MS ms)"
git_in() { git -C "$R" "$@"; }
lib_time_ms bash -c "git -C '$R' init -q && git -C '$R' add -A && git -C '$R' commit -q -m one"
((LIB_RC == 0)) && ok "git init, add, commit ($LIB_MS ms)" || fail "git init/add/commit"
check "git fsck --full" git_in fsck --full --no-progress
check "every file is tracked" test "$(git_in ls-files | wc -l)" == "$GIT_FILES"
check "git status is clean" test -z "$(git_in status --porcelain)"

# a second commit: renames, deletes, edits; then gc packs and unlinks the loose objects
git_in mv dir0 dir0-renamed
git_in rm -q -r dir1
for i in $(seq 2 40 400); do echo edit >>"$R/dir$((i % 40))/sub$((i % 7))/f$i.txt"; done
check "git commit of renames, deletes, edits" git_in commit -q -a -m two
check "git gc" git_in gc -q
check "git fsck --full after gc" git_in fsck --full --no-progress
check "git status is clean after gc" test -z "$(git_in status --porcelain)"
check "git diff-files: stat data unchanged" git_in diff-files --quiet
head_before=$(git_in rev-parse HEAD)

remount
check "after a remount: git diff-files finds no changed stat data" git_in diff-files --quiet
check "after a remount: git status is clean" test -z "$(git_in status --porcelain)"
check "after a remount: git fsck --full" git_in fsck --full --no-progress
check "after a remount: HEAD unchanged" test "$(git_in rev-parse HEAD)" == "$head_before"
same_tree "after a remount, tar tree" "$SRC" "$M/tar"

lib_finish
