/*
 * The worker loop.  One job at a time, synchronously: sweep expired
 * leases and create missing environment rows when due, then claim an
 * environment to build, else a run to execute, else sleep a little
 * longer each idle round.  Signals only set flags: TERM and INT let the
 * current job finish, QUIT (or a second TERM) stops it at once and puts
 * its run back in the queue.
 */
#include <sys/stat.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "conf.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define ENSURE_MIN_INTERVAL	1.0
#define CONNECT_BACKOFF_MAX	30.0

volatile sig_atomic_t worker_stop;
volatile sig_atomic_t worker_quit;

static void
on_signal(int sig)
{
	if (sig == SIGQUIT || worker_stop)
		worker_quit = 1;
	worker_stop = 1;
}

static void
worker_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a signal must cut a sleep or a poll short. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

/* Sleeps up to secs; a signal ends the sleep early. */
static void
nap(double secs)
{
	struct timespec ts;

	if (secs <= 0 || worker_stop)
		return;
	ts.tv_sec = (time_t)secs;
	ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/* A fresh fencing token for one claim: "<worker id>#<random>". */
void
worker_token(const struct worker *w, char *out, size_t len)
{
	char rnd[17];

	random_hex(rnd, sizeof(rnd));
	snprintf(out, len, "%s#%s", w->id, rnd);
}

static void
worker_dirs(const struct conf *c)
{
	static const char *const sub[] = {
		"workspaces", "venvs", "cache/pip", "db"
	};
	char path[4096];
	size_t i;

	for (i = 0; i < NELEM(sub); i++) {
		snprintf(path, sizeof(path), "%s/%s", c->data_dir, sub[i]);
		if (mkdir_p(path, 0750) == -1)
			log_warn("mkdir %s", path);
	}
}

/*
 * Opens the connection, waiting with growing delays while the database is
 * unreachable.  Returns NULL only when asked to stop.
 */
static struct store *
worker_connect(const struct conf *c)
{
	struct store *st;
	struct buf err;
	double delay = 1;
	int tries = 0;

	buf_init(&err);
	while (!worker_stop) {
		buf_reset(&err);
		if ((st = store_open(c, &err)) != NULL) {
			if (tries > 0)
				log_notice("database reachable again after %d "
				    "attempts", tries + 1);
			buf_free(&err);
			return st;
		}
		tries++;
		log_error("cannot connect to the database (attempt %d): %s; "
		    "next attempt in %.0f s", tries, buf_str(&err), delay);
		nap(delay + jitter(delay / 4));
		delay = delay * 2 > CONNECT_BACKOFF_MAX ? CONNECT_BACKOFF_MAX :
		    delay * 2;
	}
	buf_free(&err);
	return NULL;
}

static void
worker_sweep(struct worker *w)
{
	struct sweep_counts n;

	if (store_sweep(w->store, w->conf->backoff_base, w->conf->backoff_max,
	    &n) < 0) {
		log_warnx("lease sweep: %s", store_error(w->store));
		return;
	}
	if (n.runs_requeued || n.runs_failed || n.envs_requeued)
		log_notice("lease sweep: %ld runs requeued, %ld runs failed, "
		    "%ld environments requeued", n.runs_requeued,
		    n.runs_failed, n.envs_requeued);
}

static void
worker_ensure(struct worker *w)
{
	long ins, req;

	if (store_ensure_environments(w->store, &ins, &req) < 0) {
		log_warnx("ensure environments: %s", store_error(w->store));
		return;
	}
	if (ins || req)
		log_info("environments: %ld new, %ld failed ones queued again",
		    ins, req);
}

/* Returns 1 if a job was done, 0 if there was nothing, -1 on error. */
static int
worker_round(struct worker *w)
{
	struct env_claim ec;
	struct run_claim rc;
	char token[256];
	int r;

	worker_token(w, token, sizeof(token));
	r = store_claim_environment(w->store, token, w->conf->lease_seconds,
	    &ec);
	if (r == 1) {
		job_build_environment(w, &ec, token);
		w->jobs_done++;
		return 1;
	}
	if (r < 0) {
		log_warnx("claim environment: %s", store_error(w->store));
		return r;
	}
	worker_token(w, token, sizeof(token));
	r = store_claim_run(w->store, token, w->conf->lease_seconds, &rc);
	if (r == 1) {
		job_execute_run(w, &rc, token);
		store_run_claim_free(&rc);
		w->jobs_done++;
		return 1;
	}
	if (r < 0)
		log_warnx("claim run: %s", store_error(w->store));
	return r;
}

/*
 * Idle wait on a backend that notifies: until a notification, the next
 * sweep, the next run that becomes due, or listen_timeout.  After a
 * notification a short random delay spreads the idle workers' claims.
 */
static int
worker_wait(struct worker *w, double next_sweep)
{
	const struct conf *c = w->conf;
	double wait = c->listen_timeout, due, left;

	left = next_sweep - now_mono();
	if (left < wait)
		wait = left;
	/* Finishing a run notifies nobody; the last one must be seen. */
	if (w->exit_when_idle && wait > c->poll_interval_max)
		wait = c->poll_interval_max;
	if (store_next_due(w->store, &due) == 0 && due > 0 && due < wait)
		wait = due;
	if (wait < 0.01)
		wait = 0.01;
	if (store_wait(w->store, wait) != 1)
		return 0;
	nap(jitter((double)c->notify_jitter_ms / 1000.0));
	return 1;
}

int
worker_main(const struct conf *c, int exit_when_idle)
{
	struct worker w;
	struct buf missing;
	double now, next_sweep, next_ensure, poll_s;
	char host[128];
	long pending;
	int r, rc = WORKER_EXIT_OK;

	memset(&w, 0, sizeof(w));
	w.conf = c;
	w.exit_when_idle = exit_when_idle;
	if (c->worker_id[0] != '\0')
		snprintf(host, sizeof(host), "%s", c->worker_id);
	else if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "worker");
	host[sizeof(host) - 1] = '\0';
	snprintf(w.id, sizeof(w.id), "%s:%ld", host, (long)getpid());
	worker_signals();
	worker_dirs(c);

	if ((w.store = worker_connect(c)) == NULL)
		return WORKER_EXIT_OK;
	buf_init(&missing);
	r = store_check_schema(w.store, &missing);
	if (r != 0) {
		if (r > 0)
			log_error("the database lacks required tables: %s; "
			    "create them with \"ade-ctl db init\" (or the ADE "
			    "migrations)", buf_str(&missing));
		else
			log_error("cannot check the schema: %s",
			    store_error(w.store));
		buf_free(&missing);
		store_close(w.store);
		return WORKER_EXIT_CONFIG;
	}
	buf_free(&missing);
	log_info("worker %s started (%s backend, data in %s)", w.id,
	    store_backend(w.store), c->data_dir);

	now = now_mono();
	next_sweep = now;
	next_ensure = now;
	poll_s = c->poll_interval;
	while (!worker_stop) {
		now = now_mono();
		if (now >= next_sweep) {
			worker_sweep(&w);
			next_sweep = now + c->cleanup_interval;
		}
		if (now >= next_ensure) {
			worker_ensure(&w);
			next_ensure = now + (c->poll_interval_max >
			    ENSURE_MIN_INTERVAL ? c->poll_interval_max :
			    ENSURE_MIN_INTERVAL);
		}
		r = worker_round(&w);
		if (r == 1) {
			poll_s = c->poll_interval;
			continue;
		}
		if (r == 0 && w.exit_when_idle) {
			if (store_pending(w.store, &pending) == 0 &&
			    pending == 0) {
				log_info("queue drained; exiting");
				break;
			}
		}
		if (r == 0 && c->notify && store_listens(w.store)) {
			if (worker_wait(&w, next_sweep) == 1)
				next_ensure = 0;
			continue;
		}
		nap(poll_s);
		poll_s = backoff_idle_next(poll_s, c->poll_interval_max,
		    jitter(0.05));
	}
	log_info("worker %s stopping after %ld jobs", w.id, w.jobs_done);
	store_close(w.store);
	return rc;
}
