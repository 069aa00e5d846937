/*
 * The data directory layout, and safe construction of every path that
 * is built from a database value: ids are normalized, segments are
 * checked, and a joined path never leaves its base.
 */
#ifndef ADE_PATHS_H
#define ADE_PATHS_H

#include <stddef.h>

int	path_join(char *, size_t, const char *, const char *);
int	path_segment(char *, size_t, const char *);
int	path_filename_ok(const char *);
void	path_deps_segment(char *, size_t, const char *);
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

#endif
