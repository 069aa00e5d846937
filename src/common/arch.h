/*
 * Archives where they meet the worker: configuration packages delivered
 * as .zip or .tar.gz are extracted under limits and with every entry
 * checked, and support bundles are written as .tar.gz or .zip.  arch.c
 * is the only file that includes archive.h.
 */
#ifndef ADE_ARCH_H
#define ADE_ARCH_H

#include <stddef.h>
#include <stdint.h>

/* What one extraction may hold at most. */
struct arch_limits {
	size_t		max_entries;	/* entries of any type */
	uint64_t	max_bytes;	/* uncompressed bytes, all entries */
	uint64_t	max_entry_bytes; /* uncompressed bytes of one entry */
};

int	arch_extract(const char *archive, const char *dest_dir,
	    const struct arch_limits *lim, char *err, size_t errlen);
int	arch_package_root(const char *dest_dir, char *out, size_t len);
int	arch_write_bundle(const char *out_path, const char *const *paths,
	    const char *const *names, size_t n, const char *summary_json,
	    char *err, size_t errlen);
int	arch_write_bundle_in(const char *out_path, const char *top,
	    const char *const *paths, const char *const *names, size_t n,
	    const char *summary_json, char *err, size_t errlen);

#endif
