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
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

#ifndef ADE_VERSION
#define ADE_VERSION "0.0.0"
#endif

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

/* A point of the dashboard's charts; only this process writes them. */
static void
history_add(time_t at, long due, long finished, double seconds)
{
	struct sb_point *p;

	p = &scoreboard->history[scoreboard->history_next % SB_HISTORY];
	p->at = at;
	p->due = due;
	p->finished = finished;
	p->seconds = seconds;
	__sync_synchronize();
	scoreboard->history_next++;
}

static double
average(long ms, long n)
{
	return n > 0 ? (double)ms / 1000.0 / (double)n : 0;
}

/*
 * Every stats_period, one line of what this host did since the last one
 * and how the queue stands.  The figures of a line are kept in the
 * scoreboard, so the next is their difference.  The passes may come a
 * little early or late: a line covers the time since the one before.
 */
static void
stats_line(const struct conf *c, struct store *st)
{
	struct sb_stats_mark *m = &scoreboard->stats_mark;
	const struct sb_counters *k = &scoreboard->counters;
	struct sb_stats_mark now;
	struct queue_stats q;
	long d[SB_RUN_OUTCOMES], finished;
	char queue[160];
	size_t i;

	if (c->stats_period <= 0)
		return;
	if (m->at == 0)
		m->at = scoreboard->started;
	memset(&now, 0, sizeof(now));
	now.at = time(NULL);
	if ((double)(now.at - m->at) < c->stats_period * 0.9)
		return;
	for (i = 0; i < SB_RUN_OUTCOMES; i++) {
		now.runs[i] = __atomic_load_n(&k->runs[i], __ATOMIC_RELAXED);
		d[i] = now.runs[i] - m->runs[i];
	}
	now.wait_count = k->pickup_wait.count;
	now.wait_ms = k->pickup_wait.sum_ms;
	now.run_count = k->run_duration.count;
	now.run_ms = k->run_duration.sum_ms;
	finished = d[SB_RUN_SUCCEEDED] + d[SB_RUN_FAILED] +
	    d[SB_RUN_CANCELLED];
	if (store_queue_stats(st, &q) == 0) {
		snprintf(queue, sizeof(queue), "queue %ld due (oldest %.1f s), "
		    "%ld running", q.due, q.oldest_due, q.runs[1]);
		history_add(now.at, q.due, finished, (double)(now.at - m->at));
	} else
		snprintf(queue, sizeof(queue), "queue unknown (%s)",
		    store_error(st));
	log_info("stats: %ld s: %ld run%s finished (%ld succeeded, %ld "
	    "failed, %ld cancelled), %ld attempt%s retried, avg wait %.3f s, "
	    "avg duration %.3f s; %s", (long)(now.at - m->at), finished,
	    PLURAL(finished), d[SB_RUN_SUCCEEDED], d[SB_RUN_FAILED],
	    d[SB_RUN_CANCELLED], d[SB_RUN_RETRIED], PLURAL(d[SB_RUN_RETRIED]),
	    average(now.wait_ms - m->wait_ms, now.wait_count - m->wait_count),
	    average(now.run_ms - m->run_ms, now.run_count - m->run_count),
	    queue);
	*m = now;
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

/*
 * This host's row, "host:ID" in worker_leases (ID as in claimed_by):
 * what runs here, renewed each pass.  A host that stops renewing it is
 * shown as gone once three passes have gone by.
 */
static void
host_beat(const struct conf *c, struct store *st)
{
	char host[128], name[64];
	json_t *info;
	char *text;

	if (c->worker_id[0] != '\0')
		snprintf(host, sizeof(host), "%s", c->worker_id);
	else if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "worker");
	host[sizeof(host) - 1] = '\0';
	snprintf(name, sizeof(name), "host:%s", host);
	info = json_pack("{s:s, s:s, s:I, s:i, s:I, s:I}", "id", host,
	    "version", ADE_VERSION, "pid", (json_int_t)getppid(), "workers",
	    scoreboard->wanted, "started", (json_int_t)scoreboard->started,
	    "seen", (json_int_t)time(NULL));
	text = info != NULL ? json_dumps(info, JSON_COMPACT) : NULL;
	if (text != NULL && store_host_beat(st, name, text,
	    3 * c->cleanup_interval + 5) < 0)
		log_warnx("host row: %s", store_error(st));
	free(text);
	json_decref(info);
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
	host_beat(c, st);
	stats_line(c, st);
	if (do_gc) {
		report = json_array();
		(void)gc_local_venvs(c, st, 0, report);
		json_decref(report);
	}
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
		log_notice("lease sweep: %ld run%s requeued, %ld run%s "
		    "failed, %ld environment%s requeued", n.runs_requeued,
		    PLURAL(n.runs_requeued), n.runs_failed,
		    PLURAL(n.runs_failed), n.envs_requeued,
		    PLURAL(n.envs_requeued));
	if (do_gc) {
		report = gc_collect(c, st, 0);
		json_decref(report);
	}
	store_close(st);
	return WORKER_EXIT_OK;
}
