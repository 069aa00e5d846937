/*
 * deps_digest: one SHA-256 over, for each manifest that exists as a
 * regular file at the package root in the fixed order below, the file
 * name, a NUL byte and the file's bytes.  With no manifest the hash is of
 * the five bytes "empty".  The result reads "sha256:<64 hex digits>".
 * Source files are left out on purpose: the package is installed
 * editable, so editing them needs no new environment.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "digest.h"

static const char *const manifests[] = {
	"pyproject.toml", "poetry.lock", "requirements.txt",
	"requirements-dev.txt", "requirements.in", "constraints.txt",
};

static int
hash_file(EVP_MD_CTX *ctx, int fd)
{
	char b[65536];
	ssize_t n;

	for (;;) {
		n = read(fd, b, sizeof(b));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return (int)n;
		if (EVP_DigestUpdate(ctx, b, (size_t)n) != 1)
			return -1;
	}
}

int
deps_digest(const char *dir, char *out, size_t len)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen, i;
	char path[4096];
	struct stat st;
	EVP_MD_CTX *ctx;
	size_t k, found = 0;
	int fd, rc = -1;

	if (len < DEPS_DIGEST_LEN) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return -1;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	for (k = 0; k < sizeof(manifests) / sizeof(manifests[0]); k++) {
		snprintf(path, sizeof(path), "%s/%s", dir, manifests[k]);
		if (stat(path, &st) == -1 || !S_ISREG(st.st_mode))
			continue;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			goto out;
		if (EVP_DigestUpdate(ctx, manifests[k],
		    strlen(manifests[k]) + 1) != 1 || hash_file(ctx, fd)) {
			close(fd);
			goto out;
		}
		close(fd);
		found++;
	}
	if (found == 0 && EVP_DigestUpdate(ctx, "empty", 5) != 1)
		goto out;
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto out;
	memcpy(out, "sha256:", 7);
	for (i = 0; i < mdlen; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* The SHA-256 of a file's bytes, as 64 hex digits, and its size. */
int
sha256_file(const char *path, char *hex, long long *size)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen, i;
	struct stat st;
	EVP_MD_CTX *ctx;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &st) == -1 || (ctx = EVP_MD_CTX_new()) == NULL) {
		close(fd);
		return -1;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	    hash_file(ctx, fd) == 0 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1) {
		for (i = 0; i < mdlen; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		*size = (long long)st.st_size;
		rc = 0;
	}
	EVP_MD_CTX_free(ctx);
	close(fd);
	return rc;
}
