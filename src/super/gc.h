/*
 * Garbage collection: cold environments, stale build directories and
 * old run directories.
 */
#ifndef ADE_GC_H
#define ADE_GC_H

#include <jansson.h>

struct conf;
struct store;

json_t	*gc_collect(const struct conf *, struct store *, int dry_run);
long	 gc_local_venvs(const struct conf *, struct store *, int dry_run,
	    json_t *removed);

#endif
