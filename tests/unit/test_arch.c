/*
 * Tests arch_extract, arch_package_root and arch_write_bundle.  Every
 * archive is built here with libarchive's writer, hostile ones included
 * (names that climb out, absolute names, links, devices, too many
 * entries, zip bombs), and each refusal is checked on the disk: nothing
 * may appear next to the destination directory.
 */
#include "unit.h"

#include <dirent.h>

#include <archive.h>
#include <archive_entry.h>

#include "arch.h"

#define MIB		(1024ULL * 1024)

enum fmt { ZIP, TGZ };

enum kind { M_FILE, M_DIR, M_SYMLINK, M_HARDLINK, M_CHR };

/* One entry of an archive built by make_archive. */
struct member {
	enum kind	 kind;
	const char	*name;
	const char	*data;	/* contents, or a link's target */
	size_t		 zeros;	/* M_FILE: this many zeros instead */
	mode_t		 perm;	/* 0: 0644 for files, 0755 for dirs */
};

/* A scratch directory with an archive path and a fresh destination. */
struct fx {
	char	base[PATH_MAX];
	char	arch[PATH_MAX];
	char	dest[PATH_MAX];
	char	err[512];
};

static void
fx_init(struct fx *f, const char *archive_name)
{
	unit_tmpdir(f->base, sizeof(f->base));
	snprintf(f->arch, sizeof(f->arch), "%s/%s", f->base, archive_name);
	snprintf(f->dest, sizeof(f->dest), "%s/dest", f->base);
	assert_int_equal(mkdir(f->dest, 0700), 0);
	f->err[0] = '\0';
}

static void
fx_done(struct fx *f)
{
	assert_int_equal(rm_rf(f->base), 0);
}

/* Writes n bytes of zeros as the data of the current entry. */
static void
write_zeros(struct archive *a, size_t n)
{
	static char zero[65536];
	size_t k;

	while (n > 0) {
		k = n < sizeof(zero) ? n : sizeof(zero);
		assert_int_equal(archive_write_data(a, zero, k), (la_ssize_t)k);
		n -= k;
	}
}

/*
 * Builds an archive with exactly the given entries, whatever their
 * names and types: the writer does not police what it stores.
 */
static void
make_archive(const char *path, enum fmt fmt, const struct member *m,
    size_t n)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e;
	size_t i, size;

	assert_non_null(a);
	if (fmt == ZIP) {
		assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
		assert_int_equal(archive_write_zip_set_compression_deflate(a),
		    ARCHIVE_OK);
	} else {
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
		assert_int_equal(archive_write_set_format_pax_restricted(a),
		    ARCHIVE_OK);
	}
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (i = 0; i < n; i++) {
		e = archive_entry_new();
		archive_entry_set_pathname(e, m[i].name);
		archive_entry_set_mtime(e, 1700000000, 0);
		size = 0;
		switch (m[i].kind) {
		case M_FILE:
			size = m[i].zeros > 0 ? m[i].zeros :
			    m[i].data != NULL ? strlen(m[i].data) : 0;
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, m[i].perm ? m[i].perm :
			    0644);
			break;
		case M_DIR:
			archive_entry_set_filetype(e, AE_IFDIR);
			archive_entry_set_perm(e, m[i].perm ? m[i].perm :
			    0755);
			break;
		case M_SYMLINK:
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_perm(e, 0777);
			archive_entry_set_symlink(e, m[i].data);
			break;
		case M_HARDLINK:
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_hardlink(e, m[i].data);
			break;
		case M_CHR:
			archive_entry_set_filetype(e, AE_IFCHR);
			archive_entry_set_perm(e, 0666);
			archive_entry_set_rdevmajor(e, 1);
			archive_entry_set_rdevminor(e, 3);
			break;
		}
		archive_entry_set_size(e, (la_int64_t)size);
		assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
		if (m[i].kind == M_FILE && m[i].zeros > 0)
			write_zeros(a, m[i].zeros);
		else if (m[i].kind == M_FILE && size > 0)
			assert_int_equal(archive_write_data(a, m[i].data,
			    size), (la_ssize_t)size);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static int
extract_with(struct fx *f, size_t max_entries, uint64_t max_bytes,
    uint64_t max_entry_bytes)
{
	struct arch_limits lim;
	int rc;

	lim.max_entries = max_entries;
	lim.max_bytes = max_bytes;
	lim.max_entry_bytes = max_entry_bytes;
	f->err[0] = '\0';
	rc = arch_extract(f->arch, f->dest, &lim, f->err, sizeof(f->err));
	if (rc == -1)
		assert_true(f->err[0] != '\0');
	return rc;
}

static int
extract(struct fx *f)
{
	return extract_with(f, 100, 10 * MIB, 10 * MIB);
}

/* Reads a whole small file into a NUL-terminated string (freed by caller). */
static char *
slurp(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct buf b;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	buf_init(&b);
	if (read_file(path, &b, 1 << 20) == -1)
		fail_msg("cannot read %s: %s", path, strerror(errno));
	buf_str(&b);
	return b.data;
}

static void
assert_file(const char *dir, const char *name, const char *want)
{
	char *got = slurp(dir, name);

	assert_string_equal(got, want);
	free(got);
}

static int
exists_in(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0;
}

/* The number of entries of a directory, "." and ".." aside. */
static size_t
count_entries(const char *dir)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/*
 * After a refusal: the scratch directory holds only the archive and the
 * destination, so nothing was written beside the destination.
 */
static void
assert_nothing_outside(struct fx *f)
{
	assert_int_equal(count_entries(f->base), 2);
	assert_false(exists_in(f->base, "evil"));
}

static const struct member good[] = {
	{ M_FILE, "pyproject.toml", "[project]\nname = \"x\"\n", 0, 0 },
	{ M_DIR, "src/", NULL, 0, 0 },
	{ M_DIR, "src/pkg/", NULL, 0, 0 },
	{ M_FILE, "src/pkg/__init__.py", "VALUE = 1\n", 0, 0 },
	{ M_FILE, "src/pkg/columns/email.py", "def register(r):\n    pass\n",
	    0, 0 },
	{ M_FILE, "bin/tool", "#!/bin/sh\n", 0, 04755 },
	{ M_FILE, "./empty.txt", NULL, 0, 0 },
};

static void
check_good_tree(const char *root)
{
	struct stat st;
	char path[PATH_MAX];

	assert_file(root, "pyproject.toml", "[project]\nname = \"x\"\n");
	assert_file(root, "src/pkg/__init__.py", "VALUE = 1\n");
	assert_file(root, "src/pkg/columns/email.py",
	    "def register(r):\n    pass\n");
	assert_file(root, "empty.txt", "");
	/* Executable stays executable; the set-user-id bit is gone. */
	snprintf(path, sizeof(path), "%s/bin/tool", root);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_true((st.st_mode & S_IXUSR) != 0);
	assert_int_equal(st.st_mode & (S_ISUID | S_ISGID), 0);
}

static void
test_good_zip(void **state)
{
	struct fx f;
	char root[PATH_MAX];

	(void)state;
	fx_init(&f, "pkg.zip");
	make_archive(f.arch, ZIP, good, NELEM(good));
	assert_int_equal(extract(&f), 0);
	check_good_tree(f.dest);
	/* Files at the top: the archive root is the package root. */
	assert_int_equal(arch_package_root(f.dest, root, sizeof(root)), 0);
	assert_string_equal(root, f.dest);
	fx_done(&f);
}

static void
test_good_tgz_with_wrapper(void **state)
{
	static const struct member m[] = {
		{ M_DIR, "cfg-1.0/", NULL, 0, 0 },
		{ M_FILE, "cfg-1.0/pyproject.toml", "[project]\nname = \"x\"\n",
		    0, 0 },
		{ M_FILE, "cfg-1.0/src/pkg/__init__.py", "VALUE = 1\n", 0, 0 },
		{ M_FILE, "cfg-1.0/src/pkg/columns/email.py",
		    "def register(r):\n    pass\n", 0, 0 },
		{ M_FILE, "cfg-1.0/bin/tool", "#!/bin/sh\n", 0, 04755 },
		{ M_FILE, "cfg-1.0/empty.txt", NULL, 0, 0 },
	};
	struct fx f;
	char root[PATH_MAX], want[PATH_MAX];

	(void)state;
	fx_init(&f, "pkg.tar.gz");
	make_archive(f.arch, TGZ, m, NELEM(m));
	assert_int_equal(extract(&f), 0);
	/* One top-level directory and nothing beside it: the wrapper. */
	assert_int_equal(arch_package_root(f.dest, root, sizeof(root)), 0);
	snprintf(want, sizeof(want), "%s/cfg-1.0", f.dest);
	assert_string_equal(root, want);
	check_good_tree(root);
	fx_done(&f);
}

static void
test_good_tgz_flat(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f, "pkg.tgz");
	make_archive(f.arch, TGZ, good, NELEM(good));
	assert_int_equal(extract(&f), 0);
	check_good_tree(f.dest);
	fx_done(&f);
}

/* A name that climbs out, in both formats, first or after good entries. */
static void
refuse_one(enum fmt fmt, const struct member *bad, const char *why)
{
	struct member m[3];
	struct fx f;

	m[0] = good[0];
	m[1] = good[3];
	m[2] = *bad;
	fx_init(&f, fmt == ZIP ? "evil.zip" : "evil.tar.gz");
	make_archive(f.arch, fmt, m, NELEM(m));
	assert_int_equal(extract(&f), -1);
	if (strstr(f.err, why) == NULL)
		fail_msg("message \"%s\" does not say \"%s\"", f.err, why);
	assert_nothing_outside(&f);
	fx_done(&f);
}

static void
test_zip_slip(void **state)
{
	static const struct member up = { M_FILE, "../evil", "x\n", 0, 0 };
	static const struct member deep = { M_FILE, "a/../../evil", "x\n", 0,
	    0 };
	static const struct member dotdot_dir = { M_DIR, "..", NULL, 0, 0 };

	(void)state;
	refuse_one(ZIP, &up, "\"..\"");
	refuse_one(TGZ, &up, "\"..\"");
	refuse_one(ZIP, &deep, "\"..\"");
	refuse_one(TGZ, &deep, "\"..\"");
	refuse_one(TGZ, &dotdot_dir, "\"..\"");
}

static void
test_absolute(void **state)
{
	struct member abs = { M_FILE, NULL, "x\n", 0, 0 };
	char name[PATH_MAX], probe[PATH_MAX];
	struct stat st;

	(void)state;
	/* Aimed at a path that is certainly free, so a leak would show. */
	unit_tmpdir(probe, sizeof(probe));
	snprintf(name, sizeof(name), "%s/evil", probe);
	abs.name = name;
	refuse_one(ZIP, &abs, "absolute");
	refuse_one(TGZ, &abs, "absolute");
	assert_int_equal(lstat(name, &st), -1);
	abs.name = "/tmp/evil";
	refuse_one(TGZ, &abs, "absolute");
	assert_int_equal(rm_rf(probe), 0);
}

static void
test_symlinks(void **state)
{
	static const struct member to_etc = { M_SYMLINK, "conf", "/etc", 0,
	    0 };
	static const struct member climbing = { M_SYMLINK, "src/up",
	    "../../x", 0, 0 };
	static const struct member inside = { M_SYMLINK, "alias",
	    "pyproject.toml", 0, 0 };

	(void)state;
	refuse_one(ZIP, &to_etc, "symbolic link");
	refuse_one(TGZ, &to_etc, "symbolic link");
	refuse_one(TGZ, &climbing, "symbolic link");
	/* Every link is refused, even one that stays inside. */
	refuse_one(TGZ, &inside, "symbolic link");
}

/* A link followed by a file written through it: refused at the link. */
static void
test_symlink_then_write_through(void **state)
{
	static const struct member m[] = {
		{ M_SYMLINK, "out", "..", 0, 0 },
		{ M_FILE, "out/evil", "x\n", 0, 0 },
	};
	struct fx f;

	(void)state;
	fx_init(&f, "through.tar.gz");
	make_archive(f.arch, TGZ, m, NELEM(m));
	assert_int_equal(extract(&f), -1);
	assert_non_null(strstr(f.err, "symbolic link"));
	assert_false(exists_in(f.dest, "out"));
	assert_nothing_outside(&f);
	fx_done(&f);
}

static void
test_hardlinks(void **state)
{
	static const struct member escaping = { M_HARDLINK, "h", "../evil",
	    0, 0 };
	static const struct member to_passwd = { M_HARDLINK, "h",
	    "/etc/passwd", 0, 0 };
	static const struct member inside = { M_HARDLINK, "h",
	    "pyproject.toml", 0, 0 };

	(void)state;
	refuse_one(TGZ, &escaping, "hard link");
	refuse_one(TGZ, &to_passwd, "hard link");
	refuse_one(TGZ, &inside, "hard link");
}

static void
test_device(void **state)
{
	static const struct member chr = { M_CHR, "null", NULL, 0, 0 };

	(void)state;
	refuse_one(TGZ, &chr, "character device");
}

static void
test_too_many_entries(void **state)
{
	struct member m[11];
	char names[11][16];
	struct fx f;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(m); i++) {
		snprintf(names[i], sizeof(names[i]), "f%zu.txt", i);
		m[i] = (struct member){ M_FILE, names[i], "x", 0, 0 };
	}
	fx_init(&f, "many.zip");
	make_archive(f.arch, ZIP, m, 10);
	assert_int_equal(extract_with(&f, 10, MIB, MIB), 0);
	assert_int_equal(count_entries(f.dest), 10);
	fx_done(&f);

	fx_init(&f, "many.zip");
	make_archive(f.arch, ZIP, m, 11);
	assert_int_equal(extract_with(&f, 10, MIB, MIB), -1);
	assert_non_null(strstr(f.err, "entries"));
	assert_true(count_entries(f.dest) <= 10);
	fx_done(&f);
}

/* The size of dest/name, or 0 when it was not created. */
static off_t
size_of(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0 ? st.st_size : 0;
}

static void
test_zip_bomb(void **state)
{
	static const struct member m[] = {
		{ M_FILE, "bomb.bin", NULL, 50 * MIB, 0 },
	};
	struct stat st;
	struct fx f;

	(void)state;
	fx_init(&f, "bomb.zip");
	make_archive(f.arch, ZIP, m, NELEM(m));
	assert_int_equal(stat(f.arch, &st), 0);
	assert_true(st.st_size < (off_t)MIB);	/* small on the wire */
	assert_int_equal(extract_with(&f, 100, MIB, 100 * MIB), -1);
	assert_non_null(strstr(f.err, "limit"));
	assert_true(size_of(f.dest, "bomb.bin") <= (off_t)MIB);
	fx_done(&f);
}

/* Several entries, each within its limit, that add up past the total. */
static void
test_total_limit(void **state)
{
	static const struct member m[] = {
		{ M_FILE, "a.bin", NULL, 400 * 1024, 0 },
		{ M_FILE, "b.bin", NULL, 400 * 1024, 0 },
		{ M_FILE, "c.bin", NULL, 400 * 1024, 0 },
	};
	struct fx f;

	(void)state;
	fx_init(&f, "sum.tar.gz");
	make_archive(f.arch, TGZ, m, NELEM(m));
	assert_int_equal(extract_with(&f, 100, MIB, MIB), -1);
	assert_non_null(strstr(f.err, "limit"));
	assert_true(size_of(f.dest, "a.bin") + size_of(f.dest, "b.bin") +
	    size_of(f.dest, "c.bin") <= (off_t)MIB);
	fx_done(&f);
}

static void
test_entry_limit(void **state)
{
	static const struct member m[] = {
		{ M_FILE, "big.bin", NULL, 2 * MIB, 0 },
	};
	struct fx f;

	(void)state;
	fx_init(&f, "big.zip");
	make_archive(f.arch, ZIP, m, NELEM(m));
	assert_int_equal(extract_with(&f, 100, 100 * MIB, MIB), -1);
	assert_non_null(strstr(f.err, "per entry"));
	assert_true(size_of(f.dest, "big.bin") <= (off_t)MIB);
	fx_done(&f);
}

static uint32_t
le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

/*
 * A bomb that lies: its central directory claims 1000 bytes while the
 * deflate stream holds 50 MiB.  Only counting the bytes as they are
 * written can stop it, and it must stop at the cap.
 */
static void
test_zip_bomb_lying_size(void **state)
{
	static const struct member m[] = {
		{ M_FILE, "bomb.bin", NULL, 50 * MIB, 0 },
	};
	unsigned char *p;
	struct buf b;
	struct fx f;
	size_t i;
	int patched = 0;

	(void)state;
	fx_init(&f, "liar.zip");
	make_archive(f.arch, ZIP, m, NELEM(m));
	buf_init(&b);
	assert_int_equal(read_file(f.arch, &b, 16 << 20), 0);
	p = (unsigned char *)b.data;
	for (i = 0; i + 46 <= b.len; i++)
		if (memcmp(p + i, "PK\001\002", 4) == 0) {
			assert_int_equal(le32(p + i + 24), 50 * MIB);
			p[i + 24] = 0xe8;	/* 1000, little-endian */
			p[i + 25] = 0x03;
			p[i + 26] = 0;
			p[i + 27] = 0;
			patched++;
		}
	assert_int_equal(patched, 1);
	unit_write(f.arch, b.data, b.len, 0600);
	buf_free(&b);
	assert_int_equal(extract_with(&f, 100, MIB, 100 * MIB), -1);
	assert_true(size_of(f.dest, "bomb.bin") <= (off_t)MIB);
	fx_done(&f);
}

static void
test_not_an_archive(void **state)
{
	static const struct member none[1];
	struct fx f;

	(void)state;
	fx_init(&f, "junk.zip");
	unit_write(f.arch, "this is not an archive\n", 23, 0600);
	assert_int_equal(extract(&f), -1);
	fx_done(&f);

	fx_init(&f, "missing.zip");
	assert_int_equal(extract(&f), -1);
	fx_done(&f);

	/* An empty archive holds no package. */
	fx_init(&f, "empty.tar.gz");
	make_archive(f.arch, TGZ, none, 0);
	assert_int_equal(extract(&f), -1);
	assert_non_null(strstr(f.err, "no entries"));
	fx_done(&f);
}

/* A control character in a name is refused. */
static void
test_control_character(void **state)
{
	static const struct member nl = { M_FILE, "a\nb", "x", 0, 0 };

	(void)state;
	refuse_one(TGZ, &nl, "control");
}

/*
 * Reads an archive back: every entry name (without a trailing slash),
 * one per line, into names, and the contents of the entry want into
 * content.
 */
static void
read_back(const char *path, struct buf *names, const char *want,
    struct buf *content)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	char block[4096], name[PATH_MAX];
	la_ssize_t n;
	size_t len;

	archive_read_support_filter_all(a);
	archive_read_support_format_all(a);
	assert_int_equal(archive_read_open_filename(a, path, 10240),
	    ARCHIVE_OK);
	buf_addstr(names, "\n");
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		snprintf(name, sizeof(name), "%s", archive_entry_pathname(e));
		len = strlen(name);
		if (len > 0 && name[len - 1] == '/')
			name[len - 1] = '\0';
		buf_printf(names, "%s\n", name);
		if (strcmp(name, want) != 0)
			continue;
		while ((n = archive_read_data(a, block, sizeof(block))) > 0)
			buf_add(content, block, (size_t)n);
	}
	archive_read_free(a);
}

static void
check_bundle(const char *suffix)
{
	static const char *const want[] = {
		"input/people.csv", "output", "output/result.xlsx",
		"output/sub", "output/sub/deep.txt", "logs",
		"logs/events.ndjson", "summary.json",
	};
	static const char summary[] = "{\"run_id\": \"r1\", \"status\": "
	    "\"succeeded\"}";
	char base[PATH_MAX], dir[PATH_MAX], out[PATH_MAX], tmp[PATH_MAX];
	char in[PATH_MAX], outdir[PATH_MAX], logs[PATH_MAX], key[PATH_MAX];
	char err[256];
	const char *paths[3], *names[3];
	struct buf list, content;
	size_t i;

	unit_tmpdir(base, sizeof(base));
	snprintf(dir, sizeof(dir), "%s/run/input", base);
	assert_int_equal(mkdir_p(dir, 0755), 0);
	unit_write_in(dir, "people.csv", "Email,Name\na@b.c,A\n", 0644);
	snprintf(in, sizeof(in), "%s/people.csv", dir);
	snprintf(outdir, sizeof(outdir), "%s/run/output", base);
	snprintf(dir, sizeof(dir), "%s/sub", outdir);
	assert_int_equal(mkdir_p(dir, 0755), 0);
	unit_write_in(outdir, "result.xlsx", "PK fake", 0644);
	unit_write_in(dir, "deep.txt", "deep\n", 0644);
	/* Links in a tree are neither followed nor stored. */
	snprintf(dir, sizeof(dir), "%s/passwd", outdir);
	assert_int_equal(symlink("/etc/passwd", dir), 0);
	snprintf(logs, sizeof(logs), "%s/run/logs", base);
	assert_int_equal(mkdir_p(logs, 0755), 0);
	unit_write_in(logs, "events.ndjson", "{\"event\":\"run.start\"}\n",
	    0644);

	paths[0] = in;
	names[0] = "input/people.csv";
	paths[1] = outdir;
	names[1] = "output";
	paths[2] = logs;
	names[2] = "logs/";
	snprintf(out, sizeof(out), "%s/bundle%s", base, suffix);
	assert_int_equal(arch_write_bundle(out, paths, names, 3, summary,
	    err, sizeof(err)), 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	assert_int_equal(access(tmp, F_OK), -1);

	buf_init(&list);
	buf_init(&content);
	read_back(out, &list, "summary.json", &content);
	for (i = 0; i < NELEM(want); i++) {
		snprintf(key, sizeof(key), "\n%s\n", want[i]);
		if (strstr(buf_str(&list), key) == NULL)
			fail_msg("%s lacks %s; it holds:%s", out, want[i],
			    buf_str(&list));
	}
	/* Exactly these: the symbolic link was skipped. */
	assert_int_equal(unit_count_lines(buf_str(&list)), NELEM(want) + 1);
	assert_string_equal(buf_str(&content), summary);
	buf_reset(&list);
	buf_reset(&content);
	read_back(out, &list, "output/sub/deep.txt", &content);
	assert_string_equal(buf_str(&content), "deep\n");
	buf_free(&list);
	buf_free(&content);
	assert_int_equal(rm_rf(base), 0);
}

static void
test_bundle_tgz(void **state)
{
	(void)state;
	check_bundle(".tar.gz");
	check_bundle(".tgz");
}

static void
test_bundle_zip(void **state)
{
	(void)state;
	check_bundle(".zip");
}

static void
test_bundle_refusals(void **state)
{
	char base[PATH_MAX], out[PATH_MAX], err[256];
	const char *paths[1], *names[1];

	(void)state;
	unit_tmpdir(base, sizeof(base));
	paths[0] = base;
	names[0] = "x";
	/* The format must be known from the name. */
	snprintf(out, sizeof(out), "%s/bundle.rar", base);
	assert_int_equal(arch_write_bundle(out, paths, names, 1, "{}", err,
	    sizeof(err)), -1);
	assert_int_equal(access(out, F_OK), -1);
	/* A name that climbs out, or a missing path, fails the bundle. */
	snprintf(out, sizeof(out), "%s/bundle.zip", base);
	names[0] = "../x";
	assert_int_equal(arch_write_bundle(out, paths, names, 1, "{}", err,
	    sizeof(err)), -1);
	names[0] = "x";
	paths[0] = "/nonexistent/ade-unit";
	assert_int_equal(arch_write_bundle(out, paths, names, 1, "{}", err,
	    sizeof(err)), -1);
	assert_int_equal(access(out, F_OK), -1);
	snprintf(out, sizeof(out), "%s/bundle.zip.tmp", base);
	assert_int_equal(access(out, F_OK), -1);
	assert_int_equal(rm_rf(base), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_zip),
		cmocka_unit_test(test_good_tgz_with_wrapper),
		cmocka_unit_test(test_good_tgz_flat),
		cmocka_unit_test(test_zip_slip),
		cmocka_unit_test(test_absolute),
		cmocka_unit_test(test_symlinks),
		cmocka_unit_test(test_symlink_then_write_through),
		cmocka_unit_test(test_hardlinks),
		cmocka_unit_test(test_device),
		cmocka_unit_test(test_too_many_entries),
		cmocka_unit_test(test_zip_bomb),
		cmocka_unit_test(test_total_limit),
		cmocka_unit_test(test_entry_limit),
		cmocka_unit_test(test_zip_bomb_lying_size),
		cmocka_unit_test(test_not_an_archive),
		cmocka_unit_test(test_control_character),
		cmocka_unit_test(test_bundle_tgz),
		cmocka_unit_test(test_bundle_zip),
		cmocka_unit_test(test_bundle_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
