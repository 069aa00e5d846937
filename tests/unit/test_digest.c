/*
 * Tests deps_digest (reference section 4.2: one SHA-256 over name, NUL
 * and bytes of each manifest present, in a fixed name order, or over
 * "empty") and sha256_file.  Expected values are computed independently
 * in the test with OpenSSL's EVP interface; a few are also hard-coded
 * from python3's hashlib (computed in the shell with
 * hashlib.sha256(b"pyproject.toml\0" + bytes).hexdigest()).
 */
#include "unit.h"

#include <openssl/evp.h>

#include "digest.h"

#define PYPROJECT	"[project]\nname = \"cfg\"\nversion = \"1.0\"\n"
#define REQUIREMENTS	"ade-engine==1.0\npandas>=2\n"

/* sha256(b"empty"), from python3 hashlib. */
#define EMPTY_DIGEST \
	"sha256:" \
	"2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d"
/* sha256(b"pyproject.toml\0" + PYPROJECT), from python3 hashlib. */
#define PY_DIGEST \
	"sha256:" \
	"07c2f40d624c3f19a1f6a89725a9cb2e8442b32d1d3a1e3d13b6721e9da5829b"
/* The same followed by b"requirements.txt\0" + REQUIREMENTS. */
#define PY_RQ_DIGEST \
	"sha256:" \
	"12dd1f6df37d4c71d589566ad1f70bf63bdbdbc500694471b9cbc6f36309d03e"

/*
 * An independent SHA-256 over a list of (pointer, length) parts, as
 * "sha256:<hex>".  The list ends with a NULL pointer.
 */
static void
expect_sha256(char *out, size_t len, ...)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen, i;
	EVP_MD_CTX *ctx;
	const void *p;
	va_list ap;

	assert_true(len >= DEPS_DIGEST_LEN);
	ctx = EVP_MD_CTX_new();
	assert_non_null(ctx);
	assert_int_equal(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
	va_start(ap, len);
	while ((p = va_arg(ap, const void *)) != NULL) {
		size_t n = va_arg(ap, size_t);

		assert_int_equal(EVP_DigestUpdate(ctx, p, n), 1);
	}
	va_end(ap);
	assert_int_equal(EVP_DigestFinal_ex(ctx, md, &mdlen), 1);
	EVP_MD_CTX_free(ctx);
	assert_int_equal(mdlen, 32);
	strcpy(out, "sha256:");
	for (i = 0; i < mdlen; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static int
setup(void **state)
{
	char *dir = xmalloc(PATH_MAX);

	unit_tmpdir(dir, PATH_MAX);
	*state = dir;
	return 0;
}

static int
teardown(void **state)
{
	rm_rf(*state);
	free(*state);
	return 0;
}

static void
digest_of(const char *dir, char *out)
{
	memset(out, 'Z', DEPS_DIGEST_LEN);
	if (deps_digest(dir, out, DEPS_DIGEST_LEN) != 0)
		fail_msg("deps_digest(%s): %s", dir, strerror(errno));
	assert_int_equal(strlen(out), DEPS_DIGEST_LEN - 1);
}

static void
test_empty_dir(void **state)
{
	char got[DEPS_DIGEST_LEN], want[DEPS_DIGEST_LEN];

	digest_of(*state, got);
	assert_string_equal(got, EMPTY_DIGEST);
	expect_sha256(want, sizeof(want), "empty", (size_t)5, (void *)NULL);
	assert_string_equal(got, want);
}

static void
test_pyproject_only(void **state)
{
	const char *dir = *state;
	char got[DEPS_DIGEST_LEN], want[DEPS_DIGEST_LEN];

	unit_write_in(dir, "pyproject.toml", PYPROJECT, 0644);
	digest_of(dir, got);
	expect_sha256(want, sizeof(want),
	    /* sizeof counts the name's NUL byte. */
	    "pyproject.toml", sizeof("pyproject.toml"),
	    PYPROJECT, strlen(PYPROJECT), (void *)NULL);
	assert_string_equal(got, want);
	assert_string_equal(got, PY_DIGEST);
	assert_string_not_equal(got, EMPTY_DIGEST);
}

/* An empty manifest still counts: its name goes into the hash. */
static void
test_empty_manifest(void **state)
{
	const char *dir = *state;
	char got[DEPS_DIGEST_LEN], want[DEPS_DIGEST_LEN];

	unit_write_in(dir, "requirements.txt", "", 0644);
	digest_of(dir, got);
	expect_sha256(want, sizeof(want), "requirements.txt\0", (size_t)17,
	    (void *)NULL);
	assert_string_equal(got, want);
	assert_string_not_equal(got, EMPTY_DIGEST);
}

/*
 * The hash follows the fixed name order (pyproject.toml, then
 * requirements.txt), not the order in which the files were made.
 */
static void
test_fixed_order(void **state)
{
	const char *dir = *state;
	char first[DEPS_DIGEST_LEN], second[DEPS_DIGEST_LEN];
	char want[DEPS_DIGEST_LEN], reversed[DEPS_DIGEST_LEN];
	char other[PATH_MAX];

	unit_write_in(dir, "requirements.txt", REQUIREMENTS, 0644);
	unit_write_in(dir, "pyproject.toml", PYPROJECT, 0644);
	digest_of(dir, first);

	snprintf(other, sizeof(other), "%s/other", dir);
	assert_int_equal(mkdir(other, 0700), 0);
	unit_write_in(other, "pyproject.toml", PYPROJECT, 0644);
	unit_write_in(other, "requirements.txt", REQUIREMENTS, 0644);
	digest_of(other, second);
	assert_string_equal(first, second);

	expect_sha256(want, sizeof(want),
	    "pyproject.toml", sizeof("pyproject.toml"),
	    PYPROJECT, strlen(PYPROJECT),
	    "requirements.txt", sizeof("requirements.txt"),
	    REQUIREMENTS, strlen(REQUIREMENTS), (void *)NULL);
	assert_string_equal(first, want);
	assert_string_equal(first, PY_RQ_DIGEST);

	expect_sha256(reversed, sizeof(reversed),
	    "requirements.txt", sizeof("requirements.txt"),
	    REQUIREMENTS, strlen(REQUIREMENTS),
	    "pyproject.toml", sizeof("pyproject.toml"),
	    PYPROJECT, strlen(PYPROJECT), (void *)NULL);
	assert_string_not_equal(first, reversed);
}

/* All six manifests, in the order of reference section 4.2. */
static void
test_all_manifests(void **state)
{
	static const char *const names[] = {
		"pyproject.toml", "poetry.lock", "requirements.txt",
		"requirements-dev.txt", "requirements.in", "constraints.txt",
	};
	const char *dir = *state;
	char got[DEPS_DIGEST_LEN], want[DEPS_DIGEST_LEN];
	char body[6][32];
	size_t i;

	/* Made in reverse order, to show that it does not matter. */
	for (i = NELEM(names); i-- > 0;) {
		snprintf(body[i], sizeof(body[i]), "body of %zu\n", i);
		unit_write_in(dir, names[i], body[i], 0644);
	}
	digest_of(dir, got);
	expect_sha256(want, sizeof(want),
	    names[0], strlen(names[0]) + 1, body[0], strlen(body[0]),
	    names[1], strlen(names[1]) + 1, body[1], strlen(body[1]),
	    names[2], strlen(names[2]) + 1, body[2], strlen(body[2]),
	    names[3], strlen(names[3]) + 1, body[3], strlen(body[3]),
	    names[4], strlen(names[4]) + 1, body[4], strlen(body[4]),
	    names[5], strlen(names[5]) + 1, body[5], strlen(body[5]),
	    (void *)NULL);
	assert_string_equal(got, want);
}

/* Source files and other names leave the digest alone. */
static void
test_non_manifests_ignored(void **state)
{
	const char *dir = *state;
	char before[DEPS_DIGEST_LEN], after[DEPS_DIGEST_LEN], p[PATH_MAX];

	unit_write_in(dir, "pyproject.toml", PYPROJECT, 0644);
	digest_of(dir, before);
	snprintf(p, sizeof(p), "%s/src", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	unit_write_in(p, "x.py", "print('hello')\n", 0644);
	unit_write_in(p, "requirements.txt", "nested, ignored\n", 0644);
	unit_write_in(dir, "README.md", "# readme\n", 0644);
	unit_write_in(dir, "Requirements.txt", "case differs\n", 0644);
	unit_write_in(dir, "setup.py", "raise SystemExit\n", 0644);
	digest_of(dir, after);
	assert_string_equal(before, after);
	assert_string_equal(after, PY_DIGEST);
}

/* A directory named like a manifest is not a regular file. */
static void
test_directory_manifest_ignored(void **state)
{
	const char *dir = *state;
	char got[DEPS_DIGEST_LEN], p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/requirements.txt", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	digest_of(dir, got);
	assert_string_equal(got, EMPTY_DIGEST);

	unit_write_in(dir, "pyproject.toml", PYPROJECT, 0644);
	digest_of(dir, got);
	assert_string_equal(got, PY_DIGEST);
}

/* Changing a manifest's bytes changes the digest. */
static void
test_content_matters(void **state)
{
	const char *dir = *state;
	char a[DEPS_DIGEST_LEN], b[DEPS_DIGEST_LEN];

	unit_write_in(dir, "requirements.txt", "pandas==2.0\n", 0644);
	digest_of(dir, a);
	unit_write_in(dir, "requirements.txt", "pandas==2.1\n", 0644);
	digest_of(dir, b);
	assert_string_not_equal(a, b);
}

static void
test_small_buffer(void **state)
{
	char out[DEPS_DIGEST_LEN - 1];

	errno = 0;
	assert_int_equal(deps_digest(*state, out, sizeof(out)), -1);
	assert_int_equal(errno, ENAMETOOLONG);
}

static void
test_sha256_file(void **state)
{
	const char *dir = *state;
	char hex[65], p[PATH_MAX], want[DEPS_DIGEST_LEN];
	long long size = -1;
	static char big[200000];
	size_t i;

	snprintf(p, sizeof(p), "%s/hello.txt", dir);
	unit_write(p, "hello world\n", 12, 0644);
	memset(hex, 'Z', sizeof(hex));
	assert_int_equal(sha256_file(p, hex, &size), 0);
	/* python3: hashlib.sha256(b"hello world\n").hexdigest() */
	assert_string_equal(hex,
	    "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447");
	assert_int_equal(size, 12);

	/* An empty file. */
	snprintf(p, sizeof(p), "%s/empty", dir);
	unit_write(p, "", 0, 0644);
	assert_int_equal(sha256_file(p, hex, &size), 0);
	assert_string_equal(hex,
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_int_equal(size, 0);

	/* Larger than one read buffer. */
	for (i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	snprintf(p, sizeof(p), "%s/big.bin", dir);
	unit_write(p, big, sizeof(big), 0644);
	assert_int_equal(sha256_file(p, hex, &size), 0);
	expect_sha256(want, sizeof(want), big, sizeof(big), (void *)NULL);
	assert_string_equal(hex, want + 7);
	assert_int_equal(size, (long long)sizeof(big));

	/* A missing file fails. */
	snprintf(p, sizeof(p), "%s/missing", dir);
	assert_int_equal(sha256_file(p, hex, &size), -1);
}

#define T(f)	cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_empty_dir),
		T(test_pyproject_only),
		T(test_empty_manifest),
		T(test_fixed_order),
		T(test_all_manifests),
		T(test_non_manifests_ignored),
		T(test_directory_manifest_ignored),
		T(test_content_matters),
		T(test_small_buffer),
		T(test_sha256_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
