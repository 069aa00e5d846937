/*
 * The maintenance process: forked by the supervisor on a timer, it
 * releases the claims of dead workers, sweeps expired leases and, when
 * due, collects garbage, then exits.
 */
#ifndef ADE_MAINT_H
#define ADE_MAINT_H

struct conf;

#define MAINT_LEASE_NAME	"maintenance"

int	maint_main(const struct conf *, int do_gc, const char *holder);

#endif
