/*
 * The worker loop.  One job at a time, synchronously: sweep expired
 * leases and create missing environment rows when due, then claim an
 * environment to build, else a run to execute, else sleep a little
 * longer each idle round.  Signals only set flags: TERM and INT let the
 * current job finish, QUIT (or a second TERM) stops it at once and puts
 * its run back in the queue.
 */
#include <sys/prctl.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "conf.h"
#include "log.h"
#include "proc.h"
#include "proctitle.h"
#include "rundir.h"
#include "sandbox.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define ENSURE_MIN_INTERVAL	1.0
#define ENV_LOOK		2.0	/* seconds between looks for builds */
#define CONNECT_BACKOFF_MAX	30.0
#define CONNECT_TRIES		3
/* A busy worker's heap: blocks from the heap up to this size ... */
#define WORKER_MMAP		(1024 * 1024)
/* ... and this much free memory kept at its top between runs. */
#define WORKER_TRIM		(4 * 1024 * 1024)

volatile sig_atomic_t worker_stop;
volatile sig_atomic_t worker_quit;
static volatile sig_atomic_t worker_reopen;

/*
 * The stop pipe: a stop signal writes a byte into it and nobody reads
 * it, so from then on it stays readable and every wait that polls it
 * ends at once, also one that begins after the signal was handled (a
 * signal that arrives during a database call only sets the flag, and
 * the wait that follows would otherwise sleep its full length).
 */
static int stop_pipe[2] = { -1, -1 };

static void
on_signal(int sig)
{
	int saved = errno;

	if (sig == SIGUSR1) {
		worker_reopen = 1;
		return;
	}
	if (sig == SIGQUIT || worker_stop)
		worker_quit = 1;
	worker_stop = 1;
	if (stop_pipe[1] != -1)
		(void)write(stop_pipe[1], "", 1);
	errno = saved;
}

static void
worker_signals(void)
{
	struct sigaction sa;

	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warn("pipe");
		stop_pipe[0] = stop_pipe[1] = -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a signal must cut a sleep or a poll short. */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	/* A file size limit makes a write fail (EFBIG), not the worker die. */
	sigaction(SIGXFSZ, &sa, NULL);
	/* Reloading is the supervisor's business; it replaces workers. */
	sigaction(SIGHUP, &sa, NULL);
}

/* Sleeps up to secs; a stop signal, before or during it, ends it. */
static void
nap(double secs)
{
	struct pollfd pfd;

	if (secs <= 0 || worker_stop)
		return;
	pfd.fd = stop_pipe[0];
	pfd.events = POLLIN;
	pfd.revents = 0;
	(void)poll(&pfd, 1, (int)(secs * 1000) + 1);
}

/*
 * Sleeps up to secs, in steps of at most a second, and ends once *flag
 * is set: a job that waits to try the database again keeps waiting
 * through a graceful stop (it finishes its job), but not through a fast
 * one.
 */
void
worker_pause(double secs, volatile sig_atomic_t *flag)
{
	struct timespec ts;
	double end = now_mono() + secs, left;

	while (!*flag && (left = end - now_mono()) > 0) {
		if (left > 1)
			left = 1;
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);
	}
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
		"workspaces", "cache/pip", "db"
	};
	char path[4096];
	size_t i;

	for (i = 0; i < NELEM(sub); i++) {
		snprintf(path, sizeof(path), "%s/%s", c->data_dir, sub[i]);
		if (mkdir_p(path, 0750) == -1)
			log_warn("mkdir %s", path);
	}
	if (mkdir_p(c->venvs_root, 0750) == -1)
		log_warn("mkdir %s", c->venvs_root);
}

/*
 * Opens the connection, trying a few times with growing delays.  A
 * worker that still cannot connect exits; the supervisor starts it again
 * with its own, longer backoff, so a database that stays away costs a
 * handful of attempts a minute and the slot shows the error.  A failure
 * that waiting cannot mend (a file that is not a database, or that may
 * not be written) is a configuration error: the worker exits with
 * EX_CONFIG and is not started again.
 */
static struct store *
worker_connect(const struct conf *c, int *permanent)
{
	struct store *st;
	struct buf err;
	double delay = 1;
	int tries = 0;

	buf_init(&err);
	while (!worker_stop) {
		buf_reset(&err);
		if ((st = store_open(c, &err)) != NULL) {
			store_wake_on(st, stop_pipe[0]);
			if (tries > 0)
				log_notice("database reachable again after %d "
				    "attempts", tries + 1);
			buf_free(&err);
			return st;
		}
		tries++;
		sb_set_error(buf_str(&err));
		if (store_open_failed_for_good()) {
			/* No retry or restart can mend it: say so once. */
			log_error("%s; not retrying (a configuration error)",
			    buf_str(&err));
			*permanent = 1;
			break;
		}
		if (tries >= CONNECT_TRIES) {
			log_error("cannot connect to the database after %d "
			    "attempts: %s", tries, buf_str(&err));
			break;
		}
		if (worker_stop) {
			log_warnx("cannot connect to the database: %s; "
			    "stopping", buf_str(&err));
			break;
		}
		log_warnx("cannot connect to the database (attempt %d): %s; "
		    "next attempt in %.0f s", tries, buf_str(&err), delay);
		nap(delay + jitter(delay / 4));
		delay = delay * 2 > CONNECT_BACKOFF_MAX ? CONNECT_BACKOFF_MAX :
		    delay * 2;
	}
	buf_free(&err);
	return NULL;
}

/* The environment pass: 1 when it made an environment claimable. */
static int
worker_ensure(struct worker *w)
{
	long ins, req;

	if (store_ensure_environments(w->store, &ins, &req) < 0) {
		log_warnx("ensure environments: %s", store_error(w->store));
		return 0;
	}
	if (ins || req) {
		log_info("environments: %ld new, %ld failed ones queued again",
		    ins, req);
		w->env_hint = 1;
		return 1;
	}
	return 0;
}

/*
 * A new state for the scoreboard and, in the same words, for the process
 * title (with the id of the job's run or environment, or NULL).
 */
static void
worker_state(enum sb_state st, const char *id)
{
	sb_set_state(st);
	proctitle_setstate(sb_state_name(st), id);
}

static void
worker_job_done(struct worker *w)
{
	sb_set_claim(SB_CLAIM_NONE, NULL, NULL);
	worker_state(SB_IDLE, NULL);
	w->jobs_done++;
	if (sb_self != NULL)
		sb_self->jobs_done = w->jobs_done;
}

/* Resident memory in bytes, from /proc/self/statm. */
static long long
worker_rss(void)
{
	long long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lld %lld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * sysconf(_SC_PAGESIZE);
}

/*
 * Whether this worker should make way for a fresh one: after its share
 * of jobs (with jitter, so workers do not all go at once) or when it has
 * grown too large.
 */
static int
worker_recycle(const struct worker *w, long limit)
{
	long long rss;

	if (limit > 0 && w->jobs_done >= limit) {
		log_info("recycling after %ld job%s", w->jobs_done,
		    PLURAL(w->jobs_done));
		return 1;
	}
	if (w->conf->max_rss > 0 && (rss = worker_rss()) > w->conf->max_rss) {
		log_info("recycling at %lld bytes resident (max_rss %lld)",
		    rss, w->conf->max_rss);
		return 1;
	}
	return 0;
}

/*
 * For the tests only: ADE_TEST_DIE_AFTER_CLAIM names a file, and the
 * first worker that finds it there right after a claim committed
 * removes it and dies by SIGKILL before it records the claim, the way a
 * crash at that moment would leave things.  When the file says "ahead",
 * only a run claimed ahead (with the success of the one before) counts,
 * and the worker dies once that success has committed.
 */
static const char *die_after_claim;
static int die_ahead;

static void
worker_claimed(int r, int ahead)
{
	if (r == 1 && die_after_claim != NULL && ahead == die_ahead &&
	    unlink(die_after_claim) == 0)
		raise(SIGKILL);
}

/* This host's counters learn of the database's failures. */
static void
worker_store_event(enum store_event e)
{
	if (scoreboard != NULL)
		sb_count(e == STORE_EV_ERROR ? &scoreboard->counters.db_errors :
		    &scoreboard->counters.db_reconnects);
}

/* Claims an environment to build and builds it: 1, 0 (none) or -1. */
static int
worker_build_one(struct worker *w)
{
	struct env_claim ec;
	char token[256];
	int r;

	/*
	 * The scoreboard learns each token before the claim commits, so a
	 * worker that dies in between has its claim released at once.
	 */
	worker_token(w, token, sizeof(token));
	sb_set_claiming(SB_CLAIM_ENV, token);
	r = store_claim_environment(w->store, token, w->conf->lease_seconds,
	    &ec);
	worker_claimed(r, 0);
	if (r == 1) {
		sb_pass_on();
		if (scoreboard != NULL)
			sb_count(&scoreboard->counters.claims_env);
		sb_set_claim(SB_CLAIM_ENV, ec.id, token);
		worker_state(SB_BUILDING, ec.id);
		job_build_environment(w, &ec, token);
		worker_job_done(w);
		return 1;
	}
	sb_set_claim(SB_CLAIM_NONE, NULL, NULL);
	if (r < 0)
		log_warnx("claim environment: %s", store_error(w->store));
	return r;
}

/*
 * Asks the success of the run about to start to claim the next one in
 * its round trip (store_claim_ahead): not when this worker is to stop,
 * nor when it is time to look for environments to build, which the
 * claimed run would wait for.
 */
static void
worker_ask_ahead(struct worker *w)
{
	char token[256];

	if (worker_stop || w->env_hint || now_mono() >= w->next_env_look)
		return;
	worker_token(w, token, sizeof(token));
	/* The scoreboard learns the token before the claim can commit. */
	sb_set_claim_next(token);
	if (!store_claim_ahead(w->store, token, w->conf->lease_seconds))
		sb_set_claim_next(NULL);
}

/* Claims a run and executes it: 1, 0 (none) or -1. */
static int
worker_run_one(struct worker *w)
{
	struct run_claim rc;
	char token[256];
	double t;
	int r, ahead, found;

	/* A run claimed with the last success is taken by its token. */
	if (!(ahead = store_claimed_ahead(w->store, token, sizeof(token),
	    NULL)))
		worker_token(w, token, sizeof(token));
	sb_set_claiming(SB_CLAIM_RUN, token);
	t = now_mono();
	r = store_claim_run(w->store, token, w->conf->lease_seconds, &rc);
	rc.claim_took = now_mono() - t;
	sb_set_claim_next(NULL);
	if (!ahead)
		worker_claimed(r, 0);
	if (r == 1) {
		sb_pass_on();
		if (scoreboard != NULL) {
			sb_count(&scoreboard->counters.claims_run);
			sb_observe(&scoreboard->counters.pickup_wait,
			    rc.waited);
		}
		sb_set_claim(SB_CLAIM_RUN, rc.id, token);
		worker_state(SB_RUNNING, rc.id);
		worker_ask_ahead(w);
		job_execute_run(w, &rc, token);
		/* A request the run did not use (it did not succeed). */
		store_claim_ahead(w->store, NULL, 0);
		if (store_claimed_ahead(w->store, token, sizeof(token),
		    &found) && found)
			worker_claimed(1, 1);
		store_run_claim_free(&rc);
		worker_job_done(w);
		return 1;
	}
	sb_set_claim(SB_CLAIM_NONE, NULL, NULL);
	if (r < 0)
		log_warnx("claim run: %s", store_error(w->store));
	return r;
}

/*
 * One job: 1 if one was done, 0 if there was nothing, -1 on error.
 * Environments come first, but while runs keep coming, a worker asks
 * for an environment only every ENV_LOOK seconds, or at once when the
 * environment pass queued one: a run then costs one claim, not two.
 * A look for runs that finds none always asks for an environment too.
 * A worker told of new work looks for runs first: what woke it is most
 * likely a run, and its pickup should not wait for another statement.
 */
static int
worker_round(struct worker *w)
{
	double now = now_mono();
	char token[256];
	int r, looked = 0;

	/*
	 * A run claimed ahead goes first; a claim ahead that found none is
	 * a look for runs that found none.
	 */
	if (store_claimed_ahead(w->store, token, sizeof(token), NULL)) {
		if ((r = worker_run_one(w)) != 0)
			return r;
		w->woken = 0;
		w->next_env_look = now + ENV_LOOK;
		return worker_build_one(w);
	}
	if (w->woken) {
		w->woken = 0;
		if ((r = worker_run_one(w)) != 0)
			return r;
		/* No run: what woke it may be an environment. */
		w->next_env_look = now + ENV_LOOK;
		return worker_build_one(w);
	}
	if (w->env_hint || now >= w->next_env_look) {
		w->env_hint = 0;
		w->next_env_look = now + ENV_LOOK;
		looked = 1;
		if ((r = worker_build_one(w)) != 0)
			return r;
	}
	if ((r = worker_run_one(w)) != 0 || looked)
		return r;
	w->next_env_look = now + ENV_LOOK;
	return worker_build_one(w);
}

/*
 * Idle wait on a backend that notifies: until a notification, the next
 * sweep, the next run that becomes due, or listen_timeout.  Only the
 * poller waits so (one worker per host): a notification wakes one
 * worker per host, not all of them, and needs no random delay unless
 * notify_jitter_ms asks for one (many hosts).
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
	if (c->notify_jitter_ms > 0)
		nap(jitter((double)c->notify_jitter_ms / 1000.0));
	return 1;
}

/*
 * How long an idle worker that is not the poller sleeps before it looks
 * by itself, should a wake go astray.
 */
static double
idle_sleep_max(const struct conf *c)
{
	return c->cleanup_interval > c->poll_interval_max ?
	    c->cleanup_interval : c->poll_interval_max;
}

/* The worker's name, hooks, signals and process settings. */
static void
worker_setup(struct worker *w, const struct conf *c)
{
	char host[128];

	if (c->worker_id[0] != '\0')
		snprintf(host, sizeof(host), "%s", c->worker_id);
	else if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "worker");
	host[sizeof(host) - 1] = '\0';
	snprintf(w->id, sizeof(w->id), "%s:%ld", host, (long)getpid());
	if ((die_after_claim = getenv("ADE_TEST_DIE_AFTER_CLAIM")) != NULL) {
		struct buf what;

		buf_init(&what);
		die_ahead = read_file(die_after_claim, &what, 64) == 0 &&
		    strncmp(buf_str(&what), "ahead", 5) == 0;
		buf_free(&what);
	}
	store_event_hook = worker_store_event;
	store_set_interrupts(&worker_stop, &worker_quit);
	worker_state(SB_STARTING, NULL);
	worker_signals();
	worker_dirs(c);
	/*
	 * Engines run with this uid: without this, one could read the
	 * worker's memory (the database password) through /proc or ptrace.
	 */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		log_warn("prctl PR_SET_DUMPABLE");
	sandbox_setup(c);
	/*
	 * A busy worker's heap grows and shrinks by the same few hundred
	 * KiB every run (SQLite drops its page cache whenever another
	 * process wrote): each shrink is a brk call and a flush of every
	 * CPU's TLB, each regrowth page faults.  The heap keeps up to
	 * WORKER_TRIM of free memory while the worker is busy, and gives
	 * all of it back when the worker goes idle (worker_loop).
	 */
	if (mallopt(M_MMAP_THRESHOLD, WORKER_MMAP) != 1 ||
	    mallopt(M_TRIM_THRESHOLD, WORKER_TRIM) != 1)
		/* Another allocator (a sanitizer's) has its own ways. */
		log_debug("mallopt refused; the heap is trimmed as usual");
	/* What an engine or a build step detaches must stay within reach. */
	if (proc_adopt_orphans() == -1)
		log_warn("prctl(PR_SET_CHILD_SUBREAPER)");
}

/*
 * Connects and checks the schema.  0, or the exit status: a schema that
 * lacks what the worker needs is a configuration error.
 */
static int
worker_open(struct worker *w, const struct conf *c)
{
	struct buf missing;
	int r, permanent = 0;

	if ((w->store = worker_connect(c, &permanent)) == NULL)
		return permanent ? WORKER_EXIT_CONFIG : worker_stop ?
		    WORKER_EXIT_OK : WORKER_EXIT_ERROR;
	buf_init(&missing);
	r = store_check_schema(w->store, &missing, NULL);
	if (r > 0)
		log_error("the database lacks required tables or columns: %s; "
		    "add them with \"ade-ctl db init\" (or the ADE migrations)",
		    buf_str(&missing));
	else if (r < 0)
		log_error("cannot check the schema: %s", store_error(w->store));
	buf_free(&missing);
	if (r != 0) {
		store_close(w->store);
		return WORKER_EXIT_CONFIG;
	}
	log_info("worker %s started (%s backend, data in %s, engine "
	    "sandbox %s)", w->id, store_backend(w->store), c->data_dir,
	    sandbox_describe());
	return 0;
}

/*
 * Claims and runs jobs until told to stop, the job limit is reached
 * (WORKER_EXIT_RECYCLE), or, with exit_when_idle, the queue is empty.
 * An idle worker either is the host's poller, or sleeps until told.
 */
static int
worker_loop(struct worker *w)
{
	const struct conf *c = w->conf;
	double now, next_check, next_ensure, poll_s;
	long pending, job_limit = 0;
	int r, woke = 0;

	if (c->max_jobs_per_child > 0)
		job_limit = (long)c->max_jobs_per_child +
		    (long)jitter((double)c->max_jobs_per_child / 10 + 1);
	next_ensure = now_mono();
	poll_s = c->poll_interval;
	while (!worker_stop) {
		now = now_mono();
		next_check = now + c->cleanup_interval;
		if (worker_reopen) {
			worker_reopen = 0;
			log_reopen();
		}
		r = worker_round(w);
		/*
		 * Work that is there goes first; then, when it is time, the
		 * environment pass, which may make runs of a configuration
		 * new to the database claimable, and another look if it did.
		 */
		if (r == 0 && now >= next_ensure) {
			next_ensure = now + (c->poll_interval_max >
			    ENSURE_MIN_INTERVAL ? c->poll_interval_max :
			    ENSURE_MIN_INTERVAL);
			if (worker_ensure(w))
				r = worker_round(w);
		}
		if (r == 1) {
			poll_s = c->poll_interval;
			woke = 0;
			if (worker_recycle(w, job_limit))
				return WORKER_EXIT_RECYCLE;
			continue;
		}
		if (r == 0 && w->exit_when_idle &&
		    store_pending(w->store, &pending) == 0 && pending == 0) {
			log_info("queue drained; exiting");
			break;
		}
		if (r < 0) {
			nap(poll_s);
			poll_s = backoff_idle_next(poll_s, c->poll_interval_max,
			    jitter(0.05));
			continue;
		}
		/* Idle after work: what the heap kept goes back. */
		if (w->trimmed_at != w->jobs_done) {
			malloc_trim(0);
			w->trimmed_at = w->jobs_done;
		}
		/* What the next run needs before its engine, made now. */
		rundir_make(w);
		sandbox_prepare();
		/* Another idle worker looks for work: sleep until told. */
		if (!sb_poller_take()) {
			if (sb_idle_sleep(stop_pipe[0], idle_sleep_max(c)))
				poll_s = c->poll_interval;
			continue;
		}
		if (c->notify && store_listens(w->store)) {
			/*
			 * A wait that looks at the tables (SQL Server) sees
			 * again at once what this host found it could not
			 * claim (a run whose environment is being built):
			 * after such a wake it polls before it waits again.
			 */
			if (woke && store_wait_looks(w->store)) {
				nap(poll_s);
				poll_s = backoff_idle_next(poll_s,
				    c->poll_interval_max, jitter(0.05));
			}
			/* Told of new work, it looks at once, then at the
			 * environments should the look find nothing. */
			woke = worker_wait(w, next_check) == 1;
			if (woke) {
				next_ensure = 0;
				w->woken = 1;
			}
			continue;
		}
		nap(poll_s);
		poll_s = backoff_idle_next(poll_s, c->poll_interval_max,
		    jitter(0.05));
	}
	return WORKER_EXIT_OK;
}

int
worker_main(const struct conf *c, int exit_when_idle)
{
	struct worker w;
	int rc, r;

	memset(&w, 0, sizeof(w));
	w.conf = c;
	w.exit_when_idle = exit_when_idle;
	worker_setup(&w, c);
	if ((rc = worker_open(&w, c)) != 0)
		return rc;
	rundir_sweep(&w);
	worker_state(SB_IDLE, NULL);
	rc = worker_loop(&w);
	rundir_drop(&w);
	/*
	 * A run claimed ahead that it will not run goes back at once; if
	 * the database cannot take it now, the supervisor has it released
	 * by its token, which stays on the scoreboard.
	 */
	if ((r = store_release_ahead(w.store, NULL)) > 0)
		log_info("gave back the run claimed ahead");
	if (r >= 0)
		sb_set_claim_next(NULL);
	sb_pass_on();
	worker_state(SB_STOPPING, NULL);
	log_info("worker %s stopping after %ld job%s", w.id, w.jobs_done,
	    PLURAL(w.jobs_done));
	store_close(w.store);
	return rc;
}
