/*
 * The data directory layout, and safe construction of every path that
 * is built from a database value: ids are normalized, segments are
 * checked, and a joined path never leaves its base.
 */
#ifndef ADE_PATHS_H
#define ADE_PATHS_H

#include <limits.h>
#include <stddef.h>

int	path_join(char *, size_t, const char *, const char *);
int	path_segment(char *, size_t, const char *);
int	path_filename_ok(const char *);
void	path_deps_segment(char *, size_t, const char *);
int	path_real(const char *, char [PATH_MAX]);
int	path_within(const char *, const char *);

int	path_config_dir(char *, size_t, const char *, const char *,
	    const char *);
int	path_document(char *, size_t, const char *, const char *,
	    const char *);
int	path_run_dir(char *, size_t, const char *, const char *,
	    const char *);
int	path_env_parent(char *, size_t, const char *, const char *,
	    const char *, const char *);
int	path_env_root(char *, size_t, const char *, const char *,
	    const char *, const char *, const char *);

/* A build's generation: "g-" and GEN_HEX hex digits. */
#define GEN_HEX		12
#define GEN_SIZE	(2 + GEN_HEX + 1)
int	path_is_gen(const char *);
void	path_new_gen(char *, size_t);
void	path_gen_of(const char *, char *, size_t);

#endif
