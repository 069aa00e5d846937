/*
 * One maintenance pass.  Releasing the claims of dead workers needs no
 * lease (each release is guarded by the dead worker's own token); the
 * sweep and garbage collection run only on the host that holds the
 * "maintenance" lease in the database, so enabling them on every host of
 * a deployment is safe.  The lease outlives a pass by two sweep periods,
 * so the same supervisor keeps it while it lives and another host takes
 * over soon after it stops renewing it.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "backoff.h"
#include "conf.h"
#include "gc.h"
#include "log.h"
#include "maint.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"
#include "worker.h"

static void
release_orphans(const struct conf *c, struct store *st)
{
	struct sb_orphan *o;
	char id[64];
	size_t i;
	int rc;

	for (i = 0; i < SB_MAX_ORPHANS; i++) {
		o = &scoreboard->orphans[i];
		if (!o->pending)
			continue;
		/* No id: the worker died making the claim (scoreboard.h). */
		if (o->id[0] == '\0')
			rc = store_release_claim(st, o->kind == SB_CLAIM_ENV,
			    o->token, o->why, id);
		else if (o->kind == SB_CLAIM_RUN)
			rc = store_run_abandon(st, o->id, o->token, o->why,
			    c->backoff_base, c->backoff_max);
		else
			rc = store_environment_abandon(st, o->id, o->token,
			    o->why);
		if (rc < 0) {
			log_warnx("cannot release %s %s: %s", o->kind ==
			    SB_CLAIM_RUN ? "run" : "environment", o->id,
			    store_error(st));
			continue;	/* the next pass tries again */
		}
		if (rc > 0)
			log_notice("released %s %s of a dead worker (%s)",
			    o->kind == SB_CLAIM_RUN ? "run" : "environment",
			    o->id[0] != '\0' ? o->id : id, o->why);
		o->pending = 0;
	}
}

/*
 * TERM, INT and QUIT (the supervisor stopping, or dying) end a pass at
 * once and quietly, without a core dump: every step of a pass is a
 * statement or transaction that the database undoes or that the next pass
 * repeats; at worst, a directory whose removal was cut short stays on
 * disk.
 */
static void
maint_on_signal(int sig)
{
	_exit(WORKER_EXIT_OK);
}

int
maint_main(const struct conf *c, int do_gc, const char *holder)
{
	struct sweep_counts n;
	struct store *st;
	struct buf err;
	struct sigaction sa;
	json_t *report;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = maint_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	buf_init(&err);
	if ((st = store_open(c, &err)) == NULL) {
		log_error("cannot connect to the database: %s", buf_str(&err));
		buf_free(&err);
		return WORKER_EXIT_ERROR;
	}
	buf_free(&err);
	release_orphans(c, st);
	rc = store_singleton(st, MAINT_LEASE_NAME, holder,
	    2 * c->cleanup_interval + 5);
	if (rc < 0) {
		log_warnx("maintenance lease: %s (does worker_leases exist? "
		    "ade-ctl db init creates it)", store_error(st));
		store_close(st);
		return WORKER_EXIT_ERROR;
	}
	if (rc == 0) {
		log_debug("maintenance lease held by another host");
		store_close(st);
		return WORKER_EXIT_OK;
	}
	if (store_sweep(st, c->backoff_base, c->backoff_max, &n) < 0)
		log_warnx("lease sweep: %s", store_error(st));
	else if (n.runs_requeued || n.runs_failed || n.envs_requeued)
		log_notice("lease sweep: %ld runs requeued, %ld runs failed, "
		    "%ld environments requeued", n.runs_requeued,
		    n.runs_failed, n.envs_requeued);
	if (do_gc) {
		report = gc_collect(c, st, 0);
		json_decref(report);
	}
	store_close(st);
	return WORKER_EXIT_OK;
}
