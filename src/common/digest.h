/*
 * deps_digest: the fingerprint of a configuration package's dependency
 * manifests, computed exactly as the ADE API computes it.
 */
#ifndef ADE_DIGEST_H
#define ADE_DIGEST_H

#include <stddef.h>

#define DEPS_DIGEST_LEN	(7 + 64 + 1)	/* "sha256:" + hex + NUL */

int	deps_digest(const char *, char *, size_t);



int	sha256_file(const char *, char *hex65, long long *size);
#endif
