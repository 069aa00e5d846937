/*
 * Tests the data directory layout of reference section 4.1 and the safe
 * construction of paths from database values: path_join, path_segment,
 * path_deps_segment, path_document, path_config_dir, path_run_dir,
 * path_env_root and path_within.
 */
#include "unit.h"

#include "paths.h"

#define WS_UPPER	"6F9619FF-8B86-D011-B42D-00C04FC964FF"
#define WS		"6f9619ff-8b86-d011-b42d-00c04fc964ff"
#define CFG		"0e4c2a7e-1d2b-4c3d-9e8f-a1b2c3d4e5f6"
#define RUN		"11111111-2222-3333-4444-555555555555"
#define ENV		"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

/* path_join into a big buffer; returns its result and leaves errno. */
static int
join(char *out, const char *base, const char *rel)
{
	out[0] = '\0';
	errno = 0;
	return path_join(out, PATH_MAX, base, rel);
}

static void
test_join_normal(void **state)
{
	char out[PATH_MAX];

	(void)state;
	assert_int_equal(join(out, "/data", "a"), 0);
	assert_string_equal(out, "/data/a");
	assert_int_equal(join(out, "/data", "a/b/c.txt"), 0);
	assert_string_equal(out, "/data/a/b/c.txt");
	assert_int_equal(join(out, "/data", "uploads/file name.xlsx"), 0);
	assert_string_equal(out, "/data/uploads/file name.xlsx");
	/* Dots inside names are ordinary characters. */
	assert_int_equal(join(out, "/data", "a..b/.hidden/...x"), 0);
	assert_string_equal(out, "/data/a..b/.hidden/...x");
	/* UTF-8 names pass. */
	assert_int_equal(join(out, "/data", "d\xc3\xa9j\xc3\xa0.csv"), 0);
	assert_string_equal(out, "/data/d\xc3\xa9j\xc3\xa0.csv");
}

static void
test_join_normalizes(void **state)
{
	char out[PATH_MAX];

	(void)state;
	assert_int_equal(join(out, "/data", "./a/./b/."), 0);
	assert_string_equal(out, "/data/a/b");
	assert_int_equal(join(out, "/data", "a//b///c"), 0);
	assert_string_equal(out, "/data/a/b/c");
	assert_int_equal(join(out, "/data", "a/b/"), 0);
	assert_string_equal(out, "/data/a/b");
	assert_int_equal(join(out, "/data/", "x"), 0);
	assert_string_equal(out, "/data/x");
	assert_int_equal(join(out, "/data///", "x"), 0);
	assert_string_equal(out, "/data/x");
}

/* The root as base gives "/x", not "//x". */
static void
test_join_root_base(void **state)
{
	char out[PATH_MAX];

	(void)state;
	assert_int_equal(join(out, "/", "x/y"), 0);
	assert_string_equal(out, "/x/y");
}

static void
test_join_rejects(void **state)
{
	static const char *const bad[] = {
		"..", "../x", "a/..", "a/../b", "a/b/../../..", "./..",
		"/etc/passwd", "/", "", ".", "./", "//", "a\\b", "..\\x",
		"a\nb", "a\tb", "a\x01", "a\x1f" "b", "a\x7f", "x/\x1b[0m",
	};
	char out[PATH_MAX];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(bad); i++) {
		if (join(out, "/data", bad[i]) != -1)
			fail_msg("path_join accepted bad[%zu] \"%s\" as \"%s\"",
			    i, bad[i], out);
		assert_int_equal(errno, EINVAL);
	}
	assert_int_equal(path_join(out, sizeof(out), "/data", NULL), -1);
	assert_int_equal(path_join(out, sizeof(out), "", "x"), -1);
}

static void
test_join_too_long(void **state)
{
	char small[16], out[PATH_MAX], rel[PATH_MAX + 16];

	(void)state;
	/* "/data/abcdefghi" needs exactly 16 bytes with its NUL. */
	assert_int_equal(path_join(small, sizeof(small), "/data", "abcdefghi"),
	    0);
	assert_string_equal(small, "/data/abcdefghi");
	errno = 0;
	assert_int_equal(path_join(small, sizeof(small), "/data",
	    "abcdefghij"), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	errno = 0;
	assert_int_equal(path_join(small, sizeof(small), "/data", "ab/cd/ef/g"),
	    -1);
	assert_int_equal(errno, ENAMETOOLONG);
	errno = 0;
	assert_int_equal(path_join(small, sizeof(small),
	    "/a/very/long/base/dir", "x"), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	/* A result longer than PATH_MAX never fits a PATH_MAX buffer. */
	memset(rel, 'a', sizeof(rel) - 1);
	rel[sizeof(rel) - 1] = '\0';
	for (size_t i = 200; i < sizeof(rel) - 1; i += 200)
		rel[i] = '/';
	errno = 0;
	assert_int_equal(path_join(out, sizeof(out), "/data", rel), -1);
	assert_int_equal(errno, ENAMETOOLONG);
}

static void
test_segment(void **state)
{
	static const char *const bad[] = {
		"../x", "a/b", "", ".", "..", "a\\b", "a\nb", "/abs",
	};
	char out[64];
	size_t i;

	(void)state;
	assert_int_equal(path_segment(out, sizeof(out), WS_UPPER), 0);
	assert_string_equal(out, WS);
	assert_int_equal(path_segment(out, sizeof(out), WS), 0);
	assert_string_equal(out, WS);
	/* Non-UUIDs are used verbatim, case kept. */
	assert_int_equal(path_segment(out, sizeof(out), "Workspace-One"), 0);
	assert_string_equal(out, "Workspace-One");
	for (i = 0; i < NELEM(bad); i++) {
		errno = 0;
		if (path_segment(out, sizeof(out), bad[i]) != -1)
			fail_msg("path_segment accepted \"%s\"", bad[i]);
		assert_int_equal(errno, EINVAL);
	}
}

static void
test_filename_ok(void **state)
{
	char longname[300];

	(void)state;
	assert_int_equal(path_filename_ok("input.xlsx"), 1);
	assert_int_equal(path_filename_ok("..."), 1);
	assert_int_equal(path_filename_ok(".."), 0);
	assert_int_equal(path_filename_ok("."), 0);
	assert_int_equal(path_filename_ok(""), 0);
	assert_int_equal(path_filename_ok(NULL), 0);
	assert_int_equal(path_filename_ok("a/b"), 0);
	assert_int_equal(path_filename_ok("a\\b"), 0);
	assert_int_equal(path_filename_ok("a\rb"), 0);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(path_filename_ok(longname), 0);
	longname[255] = '\0';
	assert_int_equal(path_filename_ok(longname), 1);
}

static void
test_deps_segment(void **state)
{
	static const struct {
		const char	*in;
		const char	*out;
	} cases[] = {
		{ "sha256:abc123", "deps-abc123" },
		{ "abc123", "deps-abc123" },
		{ "sha256:AbC-1_2", "deps-AbC-1_2" },
		{ "sha256:a.b/c d", "deps-a_b_c_d" },
		{ "sha256:../../x", "deps-x" },
		{ "sha256:__abc__", "deps-abc" },
		{ "sha256:.abc.", "deps-abc" },
		{ "md5:x:y", "deps-x_y" },
		{ "sha256:", "deps-unknown" },
		{ "", "deps-unknown" },
		{ "sha256:___", "deps-unknown" },
		{ "sha256:../", "deps-unknown" },
		{ "sha256:caf\xc3\xa9", "deps-caf" },
	};
	char out[128];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		memset(out, 'Z', sizeof(out));
		path_deps_segment(out, sizeof(out), cases[i].in);
		if (strcmp(out, cases[i].out) != 0)
			fail_msg("path_deps_segment(\"%s\") = \"%s\", want "
			    "\"%s\"", cases[i].in, out, cases[i].out);
	}
}

static void
test_document(void **state)
{
	static const char *const bad[] = {
		"/etc/passwd", "file:///etc/passwd", "file://host/x",
		"file://host/../x", "../../x", "uploads/../../x",
		"file:../x", "", "file:",
	};
	char out[PATH_MAX];
	size_t i;

	(void)state;
	assert_int_equal(path_document(out, sizeof(out), "/data", WS_UPPER,
	    "uploads/x"), 0);
	assert_string_equal(out, "/data/workspaces/" WS "/documents/uploads/x");
	assert_int_equal(path_document(out, sizeof(out), "/data", WS,
	    "file:uploads/x"), 0);
	assert_string_equal(out, "/data/workspaces/" WS "/documents/uploads/x");
	assert_int_equal(path_document(out, sizeof(out), "/data", WS,
	    "file:./a//b.xlsx"), 0);
	assert_string_equal(out, "/data/workspaces/" WS "/documents/a/b.xlsx");
	for (i = 0; i < NELEM(bad); i++) {
		out[0] = '\0';
		if (path_document(out, sizeof(out), "/data", WS, bad[i]) != -1)
			fail_msg("path_document accepted \"%s\" as \"%s\"",
			    bad[i], out);
	}
	/* A hostile workspace id is refused too. */
	assert_int_equal(path_document(out, sizeof(out), "/data", "..",
	    "x"), -1);
	assert_int_equal(path_document(out, sizeof(out), "/data", "a/b",
	    "x"), -1);
}

static void
test_layout(void **state)
{
	char a[PATH_MAX], b[PATH_MAX];

	(void)state;
	assert_int_equal(path_config_dir(a, sizeof(a), "/data", WS_UPPER,
	    CFG), 0);
	assert_string_equal(a, "/data/workspaces/" WS "/config_packages/" CFG);
	assert_int_equal(path_config_dir(b, sizeof(b), "/data", WS, CFG), 0);
	assert_string_equal(a, b);

	assert_int_equal(path_run_dir(a, sizeof(a), "/data", WS_UPPER, RUN),
	    0);
	assert_string_equal(a, "/data/workspaces/" WS "/runs/" RUN);
	assert_int_equal(path_run_dir(b, sizeof(b), "/data/", WS, RUN), 0);
	assert_string_equal(a, b);

	assert_int_equal(path_env_parent(a, sizeof(a), "/data/venvs", WS, CFG,
	    "sha256:abc123"), 0);
	assert_string_equal(a, "/data/venvs/" WS "/" CFG "/deps-abc123");

	assert_int_equal(path_env_root(a, sizeof(a), "/data/venvs", WS_UPPER, CFG,
	    "sha256:abc123", ENV), 0);
	assert_string_equal(a,
	    "/data/venvs/" WS "/" CFG "/deps-abc123/" ENV);
	assert_non_null(strstr(a, "/deps-abc123/"));
	/* The same input gives the same root. */
	assert_int_equal(path_env_root(b, sizeof(b), "/data/venvs", WS, CFG,
	    "sha256:abc123", ENV), 0);
	assert_string_equal(a, b);
	/* Another digest gives another root. */
	assert_int_equal(path_env_root(b, sizeof(b), "/data/venvs", WS, CFG,
	    "sha256:abc124", ENV), 0);
	assert_string_not_equal(a, b);
}

static void
test_layout_rejects_bad_ids(void **state)
{
	char out[PATH_MAX];

	(void)state;
	assert_int_equal(path_config_dir(out, sizeof(out), "/data", "..",
	    CFG), -1);
	assert_int_equal(path_config_dir(out, sizeof(out), "/data", WS,
	    "../x"), -1);
	assert_int_equal(path_run_dir(out, sizeof(out), "/data", WS, ""), -1);
	assert_int_equal(path_run_dir(out, sizeof(out), "/data", "a/b", RUN),
	    -1);
	assert_int_equal(path_env_root(out, sizeof(out), "/data/venvs", WS, CFG,
	    "sha256:abc", ".."), -1);
	assert_int_equal(path_env_root(out, sizeof(out), "/data/venvs", WS, ".",
	    "sha256:abc", ENV), -1);
	/* A hostile digest is made harmless, not refused. */
	assert_int_equal(path_env_root(out, sizeof(out), "/data/venvs", WS, CFG,
	    "sha256:../../etc", ENV), 0);
	assert_string_equal(out, "/data/venvs/" WS "/" CFG "/deps-etc/" ENV);
}

struct tree {
	char	dir[PATH_MAX];
	char	outside[PATH_MAX];
};

static int
tree_setup(void **state)
{
	struct tree *t = xcalloc(1, sizeof(*t));

	unit_tmpdir(t->dir, sizeof(t->dir));
	unit_tmpdir(t->outside, sizeof(t->outside));
	*state = t;
	return 0;
}

static int
tree_teardown(void **state)
{
	struct tree *t = *state;

	rm_rf(t->dir);
	rm_rf(t->outside);
	free(t);
	return 0;
}

static void
test_within(void **state)
{
	struct tree *t = *state;
	char base[PATH_MAX], p[PATH_MAX], q[PATH_MAX], secret[PATH_MAX];

	snprintf(base, sizeof(base), "%s/base", t->dir);
	assert_int_equal(mkdir(base, 0700), 0);
	snprintf(p, sizeof(p), "%s/sub", base);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/sub/file.txt", base);
	unit_write(p, "x", 1, 0600);
	snprintf(secret, sizeof(secret), "%s/secret", t->outside);
	unit_write(secret, "s", 1, 0600);

	/* A plain file and the base itself are inside. */
	assert_int_equal(path_within(base, p), 1);
	assert_int_equal(path_within(base, base), 1);

	/* A link to a file outside escapes. */
	snprintf(q, sizeof(q), "%s/sub/escape", base);
	assert_int_equal(symlink(secret, q), 0);
	assert_int_equal(path_within(base, q), 0);

	/* A link to a directory outside, used as a path component. */
	snprintf(q, sizeof(q), "%s/outdir", base);
	assert_int_equal(symlink(t->outside, q), 0);
	snprintf(q, sizeof(q), "%s/outdir/secret", base);
	assert_int_equal(path_within(base, q), 0);

	/* A relative link that stays inside is fine. */
	snprintf(q, sizeof(q), "%s/inside", base);
	assert_int_equal(symlink("sub/file.txt", q), 0);
	assert_int_equal(path_within(base, q), 1);

	/* A sibling whose name starts with the base's is outside. */
	snprintf(q, sizeof(q), "%s/base2", t->dir);
	assert_int_equal(mkdir(q, 0700), 0);
	assert_int_equal(path_within(base, q), 0);

	/* A missing path is not inside. */
	snprintf(q, sizeof(q), "%s/missing", base);
	assert_int_equal(path_within(base, q), 0);
	/* Lexical ".." that lands outside. */
	snprintf(q, sizeof(q), "%s/sub/../../base2", base);
	assert_int_equal(path_within(base, q), 0);
}

/* path_real gives what realpath gives, links and ".." resolved. */
static void
test_real(void **state)
{
	struct tree *t = *state;
	char dir[PATH_MAX], q[PATH_MAX], want[PATH_MAX], got[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/a/b", t->dir);
	assert_int_equal(mkdir_p(dir, 0700), 0);
	snprintf(q, sizeof(q), "%s/a/b/f", t->dir);
	unit_write(q, "x", 1, 0600);
	snprintf(q, sizeof(q), "%s/link", t->dir);
	assert_int_equal(symlink("a/b", q), 0);
	snprintf(q, sizeof(q), "%s/link/../b/./f", t->dir);
	assert_non_null(realpath(q, want));
	assert_int_equal(path_real(q, got), 0);
	assert_string_equal(got, want);
	snprintf(q, sizeof(q), "%s/link", t->dir);
	assert_non_null(realpath(q, want));
	assert_int_equal(path_real(q, got), 0);
	assert_string_equal(got, want);
	/* A dangling link, a missing file. */
	snprintf(q, sizeof(q), "%s/dangling", t->dir);
	assert_int_equal(symlink("nowhere", q), 0);
	assert_int_equal(path_real(q, got), -1);
	assert_int_equal(errno, ENOENT);
	snprintf(q, sizeof(q), "%s/missing", t->dir);
	assert_int_equal(path_real(q, got), -1);
}

/* Generations: made, recognised, and read back from a recorded path. */
static void
test_generations(void **state)
{
	char gen[GEN_SIZE], got[GEN_SIZE], python[256];

	(void)state;
	path_new_gen(gen, sizeof(gen));
	assert_int_equal(strlen(gen), 2 + GEN_HEX);
	assert_true(path_is_gen(gen));
	snprintf(python, sizeof(python), "/v/ws/cfg/deps-ab/env/%s/.venv/bin/"
	    "python", gen);
	path_gen_of(python, got, sizeof(got));
	assert_string_equal(got, gen);
	/* A build from before generations, or anything else: none. */
	path_gen_of("/v/ws/cfg/deps-ab/env/.venv/bin/python", got, sizeof(got));
	assert_string_equal(got, "");
	path_gen_of("", got, sizeof(got));
	assert_string_equal(got, "");
	path_gen_of("/x/g-0123456789ab/.venv/bin/python3", got, sizeof(got));
	assert_string_equal(got, "");
	path_gen_of("/x/g-0123456789AB/.venv/bin/python", got, sizeof(got));
	assert_string_equal(got, "");
	path_gen_of("/x/../.venv/bin/python", got, sizeof(got));
	assert_string_equal(got, "");
	assert_false(path_is_gen("g-0123456789a"));
	assert_false(path_is_gen("g-0123456789abc"));
	assert_false(path_is_gen(".."));
}

/* mkdir_p makes what is missing, accepts what is there, stops at a file. */
static void
test_mkdir_p(void **state)
{
	char base[256], dir[512], file[512];
	struct stat st;
	mode_t mask = umask(0);

	(void)state;
	umask(mask);
	unit_tmpdir(base, sizeof(base));
	snprintf(dir, sizeof(dir), "%s/a/b/c", base);
	assert_int_equal(mkdir_p(dir, 0750), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750 & ~mask);
	/* There already, or only the last missing. */
	assert_int_equal(mkdir_p(dir, 0750), 0);
	snprintf(dir, sizeof(dir), "%s/a/b/d", base);
	assert_int_equal(mkdir_p(dir, 0750), 0);
	assert_int_equal(stat(dir, &st), 0);
	/* Doubled and trailing slashes; a missing parent two levels up. */
	snprintf(dir, sizeof(dir), "%s/a//e/f/", base);
	assert_int_equal(mkdir_p(dir, 0750), 0);
	snprintf(dir, sizeof(dir), "%s/a/e/f", base);
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* Relative to the working directory. */
	{
		int cwd = open(".", O_RDONLY | O_DIRECTORY);

		assert_true(cwd != -1);
		assert_int_equal(chdir(base), 0);
		assert_int_equal(mkdir_p("r/s/t", 0750), 0);
		assert_int_equal(fchdir(cwd), 0);
		close(cwd);
	}
	snprintf(dir, sizeof(dir), "%s/r/s/t", base);
	assert_int_equal(stat(dir, &st), 0);
	/* A file where a parent should be. */
	unit_write_in(base, "f", "x", 0644);
	snprintf(file, sizeof(file), "%s/f/g/h", base);
	assert_int_equal(mkdir_p(file, 0750), -1);
	assert_int_equal(errno, ENOTDIR);
	snprintf(file, sizeof(file), "%s/f/g", base);
	assert_int_equal(mkdir_p(file, 0750), -1);
	assert_int_equal(errno, ENOTDIR);
	assert_int_equal(rm_rf(base), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_join_normal),
		cmocka_unit_test(test_join_normalizes),
		cmocka_unit_test(test_join_root_base),
		cmocka_unit_test(test_join_rejects),
		cmocka_unit_test(test_join_too_long),
		cmocka_unit_test(test_segment),
		cmocka_unit_test(test_filename_ok),
		cmocka_unit_test(test_deps_segment),
		cmocka_unit_test(test_document),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_mkdir_p),
		cmocka_unit_test(test_layout_rejects_bad_ids),
		cmocka_unit_test(test_generations),
		cmocka_unit_test_setup_teardown(test_real, tree_setup,
		    tree_teardown),
		cmocka_unit_test_setup_teardown(test_within, tree_setup,
		    tree_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
