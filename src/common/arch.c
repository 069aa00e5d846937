/*
 * Every use of libarchive: extracting a configuration package delivered
 * as a .zip or .tar.gz, and writing a support bundle as a .tar.gz or a
 * .zip.  An archive to extract is hostile until each of its entries has
 * been checked: only regular files and directories are accepted (every
 * symbolic link, hard link, device, FIFO and socket is refused), a name
 * must be relative and free of ".." components, and the number of
 * entries, the size of each entry and the bytes written in all are
 * capped while they are written, so a zip bomb stops at its cap.
 * libarchive's own SECURE flags stay on as a second line of defence.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "arch.h"
#include "util.h"

#define ARCH_BLOCK	65536
#define ARCH_SUMMARY	"summary.json"

/*
 * What archive_write_disk enforces by itself.  Owners, permissions,
 * ACLs, extended attributes, file flags and times are deliberately not
 * restored: the files belong to the worker and get plain modes.
 */
#define ARCH_DISK_FLAGS	(ARCHIVE_EXTRACT_SECURE_NODOTDOT | \
	ARCHIVE_EXTRACT_SECURE_SYMLINKS | \
	ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | \
	ARCHIVE_EXTRACT_NO_OVERWRITE)

static void	set_err(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* libarchive's message for an object, never NULL. */
static const char *
arch_msg(struct archive *a)
{
	const char *s = archive_error_string(a);

	return s != NULL ? s : "unknown error";
}

/*
 * An entry name fit for a one-line message: control bytes become "?"
 * and a long name is cut with "...".
 */
static void
printable(char *out, size_t len, const char *name)
{
	size_t i, n = 0;

	if (name == NULL)
		name = "(no name)";
	for (i = 0; name[i] != '\0' && n + 4 < len; i++) {
		unsigned char c = (unsigned char)name[i];

		out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (name[i] != '\0' && n + 3 < len) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

/*
 * Checks an entry's pathname before anything is written for it: it must
 * be relative and free of ".." components, backslashes and control
 * bytes, and fit the file system's limits.  Returns 0 for an acceptable
 * name, 1 for a name that designates the root itself ("." or "./"),
 * and -1 with the reason in *why.
 */
static int
check_name(const char *name, const char **why)
{
	const char *p, *s;
	size_t n, parts = 0;

	if (name == NULL || name[0] == '\0') {
		*why = "the entry has no name";
		return -1;
	}
	if (name[0] == '/') {
		*why = "absolute paths are not accepted";
		return -1;
	}
	if (strlen(name) >= PATH_MAX / 2) {
		*why = "the name is too long";
		return -1;
	}
	for (p = name; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*why = "control characters in names are not accepted";
			return -1;
		}
		if (*p == '\\') {
			*why = "backslashes in names are not accepted";
			return -1;
		}
	}
	for (p = name; *p != '\0'; p = s) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, "/");
		s = p + n;
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*why = "\"..\" path components are not accepted";
			return -1;
		}
		if (n > NAME_MAX) {
			*why = "a path component is too long";
			return -1;
		}
		if (n != 1 || p[0] != '.')
			parts++;
	}
	return parts == 0 ? 1 : 0;
}

/*
 * Only regular files and directories are extracted.  Links are refused
 * whatever their target: a configuration package is a Python source
 * tree and needs none, and refusing them all leaves no target to get
 * wrong.  Returns NULL for an acceptable entry, else the reason.
 */
static const char *
check_type(struct archive_entry *e)
{
	if (archive_entry_hardlink(e) != NULL)
		return "hard links are not accepted";
	if (archive_entry_symlink(e) != NULL)
		return "symbolic links are not accepted";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
	case AE_IFDIR:
		return NULL;
	case AE_IFLNK:
		return "symbolic links are not accepted";
	case AE_IFCHR:
		return "character devices are not accepted";
	case AE_IFBLK:
		return "block devices are not accepted";
	case AE_IFIFO:
		return "FIFOs are not accepted";
	case AE_IFSOCK:
		return "sockets are not accepted";
	default:
		return "entries of this type are not accepted";
	}
}

/*
 * Plain modes for what is written: 0755 for directories and executable
 * files, 0644 for other files (the umask still applies).  Set-id and
 * sticky bits, ACLs and extended attributes are dropped.
 */
static void
sanitize_entry(struct archive_entry *e)
{
	mode_t perm = archive_entry_perm(e);

	if (archive_entry_filetype(e) == AE_IFDIR || (perm & 0111) != 0)
		archive_entry_set_perm(e, 0755);
	else
		archive_entry_set_perm(e, 0644);
	archive_entry_acl_clear(e);
	archive_entry_xattr_clear(e);
	archive_entry_set_fflags(e, 0, 0);
}

/*
 * Copies the data of the current entry from in to out, counting every
 * byte against the entry's and the archive's limits before it is
 * written, so nothing beyond a cap ever reaches the disk.
 */
static int
copy_data(struct archive *in, struct archive *out, char *buf,
    const struct arch_limits *lim, uint64_t *total, const char *shown,
    char *err, size_t errlen)
{
	uint64_t entry = 0;
	la_ssize_t got, put;

	for (;;) {
		got = archive_read_data(in, buf, ARCH_BLOCK);
		if (got == 0)
			return 0;
		if (got < 0) {
			set_err(err, errlen, "entry \"%s\": %s", shown,
			    arch_msg(in));
			return -1;
		}
		if (entry + (uint64_t)got > lim->max_entry_bytes) {
			set_err(err, errlen, "entry \"%s\": larger than the "
			    "limit of %llu bytes per entry", shown,
			    (unsigned long long)lim->max_entry_bytes);
			return -1;
		}
		if (*total + (uint64_t)got > lim->max_bytes) {
			set_err(err, errlen, "the archive expands to more "
			    "than the limit of %llu bytes",
			    (unsigned long long)lim->max_bytes);
			return -1;
		}
		put = archive_write_data(out, buf, (size_t)got);
		if (put < 0) {
			set_err(err, errlen, "entry \"%s\": %s", shown,
			    arch_msg(out));
			return -1;
		}
		entry += (uint64_t)got;
		*total += (uint64_t)got;
	}
}

/*
 * Checks and writes the entries of an opened archive into the current
 * directory.  Returns 0, or -1 with the reason in err.
 */
static int
extract_entries(struct archive *in, struct archive *out,
    const struct arch_limits *lim, char *err, size_t errlen)
{
	struct archive_entry *e;
	char shown[256], *buf;
	const char *name, *why;
	uint64_t total = 0;
	size_t entries = 0;
	la_int64_t size;
	int r, root, rc = -1;

	buf = xmalloc(ARCH_BLOCK);
	for (;;) {
		r = archive_read_next_header(in, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			set_err(err, errlen, "%s", arch_msg(in));
			goto out;
		}
		if (++entries > lim->max_entries) {
			set_err(err, errlen, "more than the limit of %zu "
			    "entries", lim->max_entries);
			goto out;
		}
		name = archive_entry_pathname(e);
		printable(shown, sizeof(shown), name);
		root = check_name(name, &why);
		if (root == -1 || (why = check_type(e)) != NULL) {
			set_err(err, errlen, "entry \"%s\" refused: %s", shown,
			    why);
			goto out;
		}
		if (root == 1) {
			if (archive_entry_filetype(e) != AE_IFDIR) {
				set_err(err, errlen, "entry \"%s\" refused: a "
				    "file cannot replace the root", shown);
				goto out;
			}
			/* The root exists already; nothing to create. */
			continue;
		}
		if (archive_entry_size_is_set(e)) {
			size = archive_entry_size(e);
			if (size < 0 || (uint64_t)size > lim->max_entry_bytes) {
				set_err(err, errlen, "entry \"%s\": larger "
				    "than the limit of %llu bytes per entry",
				    shown,
				    (unsigned long long)lim->max_entry_bytes);
				goto out;
			}
			if ((uint64_t)size > lim->max_bytes - total) {
				set_err(err, errlen, "the archive expands to "
				    "more than the limit of %llu bytes",
				    (unsigned long long)lim->max_bytes);
				goto out;
			}
		}
		sanitize_entry(e);
		r = archive_write_header(out, e);
		if (r < ARCHIVE_WARN) {
			set_err(err, errlen, "entry \"%s\": %s", shown,
			    arch_msg(out));
			goto out;
		}
		if (archive_entry_filetype(e) == AE_IFREG &&
		    copy_data(in, out, buf, lim, &total, shown, err,
		    errlen) == -1)
			goto out;
		if (archive_write_finish_entry(out) < ARCHIVE_WARN) {
			set_err(err, errlen, "entry \"%s\": %s", shown,
			    arch_msg(out));
			goto out;
		}
	}
	if (entries == 0) {
		set_err(err, errlen, "the archive holds no entries");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

/*
 * Extracts a .zip or a .tar.gz (recognized by content; a plain .tar is
 * accepted too) into dest_dir, which the caller has created fresh and
 * empty and removes again when this fails.  The extraction runs with
 * dest_dir as the current directory, so that libarchive's refusal of
 * absolute paths applies to the names as the archive spells them; the
 * previous directory is restored before returning.  Returns 0, or -1
 * with the reason in err.
 */
int
arch_extract(const char *archive, const char *dest_dir,
    const struct arch_limits *lim, char *err, size_t errlen)
{
	struct archive *in, *out;
	int cwd = -1, rc = -1;

	in = archive_read_new();
	out = archive_write_disk_new();
	if (in == NULL || out == NULL) {
		set_err(err, errlen, "out of memory");
		goto out;
	}
	archive_read_support_filter_gzip(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_zip(in);
	archive_write_disk_set_options(out, ARCH_DISK_FLAGS);
	if (archive_read_open_filename(in, archive, ARCH_BLOCK) !=
	    ARCHIVE_OK) {
		set_err(err, errlen, "cannot read the archive: %s",
		    arch_msg(in));
		goto out;
	}
	cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cwd == -1) {
		set_err(err, errlen, "cannot open the current directory: %s",
		    strerror(errno));
		goto out;
	}
	if (chdir(dest_dir) == -1) {
		set_err(err, errlen, "cannot enter %s: %s", dest_dir,
		    strerror(errno));
		close(cwd);
		cwd = -1;
		goto out;
	}
	rc = extract_entries(in, out, lim, err, errlen);
	/*
	 * Closing applies deferred directory fixups by relative path, so
	 * it must happen while dest_dir is still the current directory.
	 */
	if (archive_write_close(out) < ARCHIVE_WARN && rc == 0) {
		set_err(err, errlen, "%s", arch_msg(out));
		rc = -1;
	}
out:
	if (cwd != -1) {
		if (fchdir(cwd) == -1) {
			set_err(err, errlen, "cannot return to the previous "
			    "directory: %s", strerror(errno));
			rc = -1;
		}
		close(cwd);
	}
	if (in != NULL)
		archive_read_free(in);
	if (out != NULL)
		archive_write_free(out);
	return rc;
}

/*
 * The package root of an extracted archive.  The convention: the root
 * of the archive is the package root, except that an archive whose only
 * top-level entry is one directory (the usual "name-1.0/" wrapper) has
 * that directory as its package root.  A Python package always has a
 * file (pyproject.toml or setup.py) at its root, so the exception can
 * only catch archives that would not install anyway.
 */
int
arch_package_root(const char *dest_dir, char *out, size_t len)
{
	char only[NAME_MAX + 1];
	struct dirent *de;
	struct stat st;
	size_t count = 0;
	DIR *d;
	int n;

	if ((d = opendir(dest_dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (count++ == 0)
			snprintf(only, sizeof(only), "%s", de->d_name);
	}
	if (count == 1 && (fstatat(dirfd(d), only, &st,
	    AT_SYMLINK_NOFOLLOW) == -1 || !S_ISDIR(st.st_mode)))
		count = 0;
	closedir(d);
	if (count == 1)
		n = snprintf(out, len, "%s/%s", dest_dir, only);
	else
		n = snprintf(out, len, "%s", dest_dir);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int
has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a > b && strcmp(s + a - b, suffix) == 0;
}

/*
 * Adds one regular file, opened without following a final symbolic
 * link.  The entry's size is the size at open time; a file that grows
 * meanwhile is cut there and one that shrinks is padded with zeros, so
 * the archive stays consistent with its headers.  Anything that turns
 * out not to be a regular file is skipped.
 */
static int
bundle_file(struct archive *a, const char *src, const char *name,
    char *err, size_t errlen)
{
	struct archive_entry *e;
	struct stat st;
	char buf[ARCH_BLOCK];
	off_t left;
	ssize_t n;
	int fd, rc = -1;

	fd = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1) {
		if (errno == ELOOP)
			return 0;
		set_err(err, errlen, "cannot open %s: %s", src,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return 0;
	}
	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, st.st_mode & 0777);
	archive_entry_set_size(e, st.st_size);
	archive_entry_set_mtime(e, st.st_mtime, 0);
	if (archive_write_header(a, e) < ARCHIVE_WARN) {
		set_err(err, errlen, "%s: %s", name, arch_msg(a));
		goto out;
	}
	for (left = st.st_size; left > 0; left -= n) {
		n = read(fd, buf, left < (off_t)sizeof(buf) ? (size_t)left :
		    sizeof(buf));
		if (n == -1 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n == -1) {
			set_err(err, errlen, "cannot read %s: %s", src,
			    strerror(errno));
			goto out;
		}
		if (n == 0) {
			n = left < (off_t)sizeof(buf) ? left :
			    (off_t)sizeof(buf);
			memset(buf, 0, (size_t)n);
		}
		if (archive_write_data(a, buf, (size_t)n) < 0) {
			set_err(err, errlen, "%s: %s", name, arch_msg(a));
			goto out;
		}
	}
	if (archive_write_finish_entry(a) < ARCHIVE_WARN) {
		set_err(err, errlen, "%s: %s", name, arch_msg(a));
		goto out;
	}
	rc = 0;
out:
	archive_entry_free(e);
	close(fd);
	return rc;
}

static int
bundle_dir(struct archive *a, const char *name, mode_t mode, time_t mtime,
    char *err, size_t errlen)
{
	struct archive_entry *e;
	int rc = 0;

	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFDIR);
	archive_entry_set_perm(e, mode & 0777);
	archive_entry_set_mtime(e, mtime, 0);
	if (archive_write_header(a, e) < ARCHIVE_WARN) {
		set_err(err, errlen, "%s: %s", name, arch_msg(a));
		rc = -1;
	}
	archive_entry_free(e);
	return rc;
}

/*
 * Adds a directory tree under the archive name name.  The walk does not
 * follow symbolic links and does not cross mount points; directories
 * and regular files are added, everything else is skipped.
 */
static int
bundle_tree(struct archive *a, const char *root, const char *name,
    char *err, size_t errlen)
{
	struct archive *disk;
	struct archive_entry *e;
	const char *path;
	char *member;
	size_t rootlen = strlen(root);
	int r, rc = -1;

	disk = archive_read_disk_new();
	e = archive_entry_new();
	archive_read_disk_set_symlink_physical(disk);
	archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_XATTR |
	    ARCHIVE_READDISK_NO_ACL | ARCHIVE_READDISK_NO_FFLAGS |
	    ARCHIVE_READDISK_NO_SPARSE | ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
	if (archive_read_disk_open(disk, root) != ARCHIVE_OK) {
		set_err(err, errlen, "cannot read %s: %s", root,
		    arch_msg(disk));
		goto out;
	}
	for (;;) {
		archive_entry_clear(e);
		r = archive_read_next_header2(disk, e);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			set_err(err, errlen, "cannot read %s: %s", root,
			    arch_msg(disk));
			goto out;
		}
		path = archive_entry_sourcepath(e);
		if (path == NULL || strncmp(path, root, rootlen) != 0 ||
		    (path[rootlen] != '\0' && path[rootlen] != '/')) {
			set_err(err, errlen, "walking %s: unexpected path",
			    root);
			goto out;
		}
		member = xasprintf("%s%s", name, path + rootlen);
		r = 0;
		switch (archive_entry_filetype(e)) {
		case AE_IFDIR:
			if (archive_read_disk_can_descend(disk))
				archive_read_disk_descend(disk);
			r = bundle_dir(a, member, archive_entry_perm(e),
			    archive_entry_mtime(e), err, errlen);
			break;
		case AE_IFREG:
			r = bundle_file(a, path, member, err, errlen);
			break;
		default:
			break;
		}
		free(member);
		if (r == -1)
			goto out;
	}
	rc = 0;
out:
	archive_entry_free(e);
	archive_read_free(disk);
	return rc;
}

static int
bundle_summary(struct archive *a, const char *top, const char *json,
    char *err, size_t errlen)
{
	struct archive_entry *e;
	size_t len = strlen(json);
	char name[PATH_MAX];
	int rc = -1;

	snprintf(name, sizeof(name), "%s%s%s", top != NULL ? top : "",
	    top != NULL ? "/" : "", ARCH_SUMMARY);
	e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)len);
	archive_entry_set_mtime(e, time(NULL), 0);
	if (archive_write_header(a, e) < ARCHIVE_WARN ||
	    (len > 0 && archive_write_data(a, json, len) < 0) ||
	    archive_write_finish_entry(a) < ARCHIVE_WARN)
		set_err(err, errlen, "%s: %s", ARCH_SUMMARY, arch_msg(a));
	else
		rc = 0;
	archive_entry_free(e);
	return rc;
}

/* Adds paths[i] under [top/]names[i], after checking the name. */
static int
bundle_member(struct archive *a, const char *top, const char *path,
    const char *name, char *err, size_t errlen)
{
	char src[PATH_MAX], member[PATH_MAX];
	const char *why = "it names the root";
	struct stat st;
	size_t n;

	if (check_name(name, &why) != 0) {
		set_err(err, errlen, "bundle name \"%s\" refused: %s", name,
		    why);
		return -1;
	}
	/* Trailing slashes would double up in the walked names. */
	snprintf(member, sizeof(member), "%s", name);
	for (n = strlen(member); n > 1 && member[n - 1] == '/'; n--)
		member[n - 1] = '\0';
	if (strcmp(member, ARCH_SUMMARY) == 0) {
		set_err(err, errlen, "bundle name \"%s\" is reserved",
		    ARCH_SUMMARY);
		return -1;
	}
	if (top != NULL) {
		char within[PATH_MAX];

		if ((size_t)snprintf(within, sizeof(within), "%s/%s", top,
		    member) >= sizeof(within)) {
			set_err(err, errlen, "bundle name too long: %s", name);
			return -1;
		}
		snprintf(member, sizeof(member), "%s", within);
	}
	if ((size_t)snprintf(src, sizeof(src), "%s", path) >= sizeof(src)) {
		set_err(err, errlen, "path too long: %s", path);
		return -1;
	}
	for (n = strlen(src); n > 1 && src[n - 1] == '/'; n--)
		src[n - 1] = '\0';
	if (lstat(src, &st) == -1) {
		set_err(err, errlen, "cannot add %s: %s", src,
		    strerror(errno));
		return -1;
	}
	if (S_ISREG(st.st_mode))
		return bundle_file(a, src, member, err, errlen);
	if (S_ISDIR(st.st_mode))
		return bundle_tree(a, src, member, err, errlen);
	set_err(err, errlen, "cannot add %s: not a regular file or a "
	    "directory", src);
	return -1;
}

/*
 * Writes a support bundle: each paths[i] (a regular file, or a
 * directory tree of which directories and regular files are taken)
 * under the archive name names[i], then "summary.json" holding
 * summary_json when it is not NULL.  The format follows out_path's
 * suffix: ".zip" makes a zip (deflated), ".tar.gz" or ".tgz" a gzipped
 * tar (ustar, with pax extensions only where needed).  The archive is
 * written to out_path + ".tmp" and renamed into place once complete.
 * Returns 0, or -1 with the reason in err.
 */
int
arch_write_bundle(const char *out_path, const char *const *paths,
    const char *const *names, size_t n, const char *summary_json,
    char *err, size_t errlen)
{
	return arch_write_bundle_in(out_path, NULL, paths, names, n,
	    summary_json, err, errlen);
}

/*
 * The same, every entry under one top-level directory top (a plain
 * name), so that unpacking the archive makes one directory.
 */
int
arch_write_bundle_in(const char *out_path, const char *top,
    const char *const *paths, const char *const *names, size_t n,
    const char *summary_json, char *err, size_t errlen)
{
	struct archive *a;
	char *tmp;
	size_t i;
	int zip, rc = -1;

	if (has_suffix(out_path, ".zip"))
		zip = 1;
	else if (has_suffix(out_path, ".tar.gz") || has_suffix(out_path,
	    ".tgz"))
		zip = 0;
	else {
		set_err(err, errlen, "%s: the name must end in .zip, .tar.gz "
		    "or .tgz", out_path);
		return -1;
	}
	if ((a = archive_write_new()) == NULL) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	if (zip) {
		archive_write_set_format_zip(a);
		archive_write_zip_set_compression_deflate(a);
	} else {
		archive_write_add_filter_gzip(a);
		archive_write_set_format_pax_restricted(a);
	}
	tmp = xasprintf("%s.tmp", out_path);
	if (archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
		set_err(err, errlen, "cannot create %s: %s", tmp,
		    archive_errno(a) > 0 ? strerror(archive_errno(a)) :
		    arch_msg(a));
		archive_write_free(a);
		free(tmp);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (bundle_member(a, top, paths[i], names[i], err, errlen) ==
		    -1)
			goto out;
	if (summary_json != NULL && bundle_summary(a, top, summary_json, err,
	    errlen) == -1)
		goto out;
	if (archive_write_close(a) != ARCHIVE_OK) {
		set_err(err, errlen, "cannot write %s: %s", tmp,
		    archive_errno(a) > 0 ? strerror(archive_errno(a)) :
		    arch_msg(a));
		goto out;
	}
	if (rename(tmp, out_path) == -1) {
		set_err(err, errlen, "cannot rename %s to %s: %s", tmp,
		    out_path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	archive_write_free(a);
	if (rc == -1)
		unlink(tmp);
	free(tmp);
	return rc;
}
