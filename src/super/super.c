/*
 * The supervisor.  One slot per worker; each slot remembers its process,
 * when it started and its restart delay.  A worker that dies is started
 * again after a delay of at least one second that doubles, up to 60
 * seconds, while it keeps dying young, and goes back to one second once
 * a worker of that slot lived stable_seconds.  A worker that exits with
 * EX_CONFIG (78) cannot be helped by a restart: its slot is marked failed
 * and left alone.  When a worker dies, its engine's process group is
 * killed and the claim it held is handed to the maintenance process,
 * which releases it at once instead of waiting for the lease to expire.
 *
 * Signals: TERM and INT drain (workers finish their job; after
 * drain_timeout their engines are stopped and their runs put back), a
 * second one escalates to QUIT; QUIT stops at once, releasing claims;
 * HUP reloads the configuration and replaces the workers; USR1 reopens
 * log files; TTIN and TTOU add and remove a worker.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "conf.h"
#include "control.h"
#include "log.h"
#include "http.h"
#include "maint.h"
#include "priv.h"
#include "proc.h"
#include "proctitle.h"
#include "scoreboard.h"
#include "super.h"
#include "util.h"
#include "worker.h"

#define RESTART_FLOOR		1.0
#define RESTART_CEILING		60.0
#define KILL_GRACE		10.0
/* A maintenance pass at a stop: its time, and passes to free orphans. */
#define MAINT_GRACE		10.0
#define MAINT_STOP_PASSES	3
/*
 * A slot is active while the supervisor wants a worker in it; scaling
 * down makes a slot inactive and lets its worker finish.  A worker is
 * sent TERM at most once (stopping): it takes a second TERM for QUIT.
 */
struct slot {
	pid_t		 pid;
	double		 started;
	double		 delay;
	int		 active;
	int		 failed;
	int		 replace;	/* stopped on purpose: start again */
	int		 stopping;	/* sent TERM */
	unsigned	 generation;	/* of the configuration it had */
	ev_timer	 respawn;
};

static struct {
	struct ev_loop	*loop;
	struct conf	*conf;		/* ours: reload replaces it */
	const char	*conf_path;
	char		*pidfile;
	int		 wanted;
	struct slot	 slots[SB_MAX_SLOTS];
	int		 draining;	/* 1 graceful, 2 quit */
	int		 exit_code;
	int		 exit_when_idle;
	pid_t		 maint_pid;
	pid_t		 http_pid;
	double		 http_started;
	double		 http_delay;
	int		 http_stopping;	/* sent TERM at the end */
	ev_timer	 http_respawn;
	int		 maint_again;
	int		 maint_signalled;	/* sent to it, or 0 */
	int		 maint_stop_passes;	/* started at the stop */
	int		 gc_now;
	double		 next_gc;
	char		 holder[192];
	time_t		 started;
	int		*ready_fd;
	ev_timer	 maint_timer;
	ev_timer	 drain_timer;
	ev_timer	 kill_timer;
	ev_timer	 maint_guard;
	ev_child	 child;
	ev_signal	 sigs[8];
	ev_async	 scale_async;
	unsigned	 generation;	/* counts reloads */
	int		 ups_seen;
	int		 downs_seen;
} S;

/*
 * TTIN and TTOU are counted by a handler of our own: libev reports a
 * signal that arrived twice before its watcher ran only once.
 */
static volatile sig_atomic_t scale_ups, scale_downs;

static void	spawn(int);
static void	maybe_done(void);
static int	workers_left(void);
static void	kill_strays(void);

static const char *
describe(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d",
		    WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d%s", WTERMSIG(status),
		    WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, len, "stopped (status %d)", status);
	return buf;
}

/*
 * Prepares a forked child: default signal dispositions and an empty mask
 * (libev's handlers and blocked signals must not leak into it), death
 * with the supervisor, and no control socket.
 */
static void
child_setup(pid_t parent)
{
	sigset_t none;
	int sig;

	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGQUIT);
	if (getppid() != parent)
		_exit(WORKER_EXIT_OK);
	control_forget();
	if (S.ready_fd != NULL && *S.ready_fd != -1)
		close(*S.ready_fd);
	log_echo(-1);
}

static void
spawn(int i)
{
	struct slot *s = &S.slots[i];
	struct sb_slot *sb = &scoreboard->slots[i];
	pid_t parent = getpid(), pid;

	if (S.draining || !s->active || s->failed || s->pid != 0)
		return;
	memset((void *)sb, 0, sizeof(*sb));
	sb->state = SB_STARTING;
	sb->restarts = s->started > 0 ? 1 : 0;
	if (s->started > 0)
		sb_count(&scoreboard->counters.worker_restarts);
	switch (pid = fork()) {
	case -1:
		log_warn("fork worker %d", i);
		s->delay = RESTART_CEILING / 4;
		ev_timer_set(&s->respawn, s->delay, 0);
		ev_timer_start(S.loop, &s->respawn);
		return;
	case 0:
		child_setup(parent);
		sb_self = sb;
		sb_self->pid = getpid();
		sb_self->started = time(NULL);
		log_setrole("worker %d", i);
		proctitle_setrole("ade-worker", "worker %d", i);
		_exit(worker_main(S.conf, S.exit_when_idle));
	}
	s->pid = pid;
	s->started = ev_now(S.loop);
	s->replace = 0;
	s->stopping = 0;
	s->generation = S.generation;
	sb->pid = pid;
	sb->started = time(NULL);
	log_info("worker %d started (pid %ld)", i, (long)pid);
}

static void
respawn_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct slot *s = (struct slot *)((char *)w -
	    offsetof(struct slot, respawn));

	spawn((int)(s - S.slots));
}

/*
 * While the supervisor stops, a maintenance pass gets MAINT_GRACE seconds
 * (KILL_GRACE after QUIT), then QUIT, then, a few seconds later, KILL: a
 * pass stuck on a database must not keep the supervisor from exiting.
 */
/* Starts the HTTP endpoint when one is configured. */
static void
http_spawn(void)
{
	pid_t parent = getpid(), pid;

	if (S.conf->http_listen[0] == '\0' || S.draining || S.http_pid != 0)
		return;
	switch (pid = fork()) {
	case -1:
		log_warn("fork http");
		return;
	case 0:
		child_setup(parent);
		log_setrole("http");
		proctitle_setrole("ade-http", "http");
		_exit(http_main(S.conf, parent));
	}
	S.http_pid = pid;
	S.http_started = ev_now(S.loop);
	S.http_stopping = 0;
}

static void
http_respawn_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	http_spawn();
}

/* The endpoint exited: started again, like a worker, unless we stop. */
static void
reap_http(int status)
{
	char how[96];

	S.http_pid = 0;
	if (S.draining || S.http_stopping)
		return;
	if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_CONFIG) {
		log_error("http endpoint stopped on a configuration error; "
		    "not restarted");
		return;
	}
	if (ev_now(S.loop) - S.http_started >= S.conf->stable_seconds)
		S.http_delay = 0;
	S.http_delay = S.http_delay == 0 ? 1 : S.http_delay * 2;
	if (S.http_delay > RESTART_CEILING)
		S.http_delay = RESTART_CEILING;
	log_warnx("http endpoint %s; restarting in %.0f s",
	    describe(status, how, sizeof(how)), S.http_delay);
	ev_timer_set(&S.http_respawn, S.http_delay, 0);
	ev_timer_start(S.loop, &S.http_respawn);
}

static void
maint_guard(double after)
{
	if (S.maint_pid == 0 || ev_is_active(&S.maint_guard))
		return;
	ev_timer_set(&S.maint_guard, after, 0);
	ev_timer_start(S.loop, &S.maint_guard);
}

static void
maint_signal(int sig)
{
	if (S.maint_pid == 0 || S.maint_signalled == sig)
		return;
	kill(S.maint_pid, sig);
	S.maint_signalled = sig;
}

static void
maint_guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	if (S.maint_pid == 0)
		return;
	if (S.maint_signalled == 0) {
		log_warnx("maintenance pass still running %.0f s into the "
		    "stop; stopping it", MAINT_GRACE);
		maint_signal(SIGQUIT);
		ev_timer_set(w, KILL_GRACE / 2, 0);
		ev_timer_start(loop, w);
		return;
	}
	log_warnx("maintenance pass (pid %ld) did not stop; killing it",
	    (long)S.maint_pid);
	maint_signal(SIGKILL);
}

/* Starts a maintenance pass; 0 when one runs, -1 when none can. */
static int
maint_spawn(void)
{
	pid_t parent = getpid(), pid;
	int gc = 0;

	if (S.maint_pid != 0) {
		S.maint_again = 1;
		return 0;
	}
	if (S.draining && S.maint_stop_passes >= MAINT_STOP_PASSES) {
		if (S.maint_stop_passes++ == MAINT_STOP_PASSES)
			log_warnx("%d claim%s of dead workers left for "
			    "their leases to expire", sb_orphans_pending(),
			    PLURAL(sb_orphans_pending()));
		return -1;
	}
	if (S.gc_now || (S.conf->gc_enable && S.conf->gc_interval > 0 &&
	    ev_now(S.loop) >= S.next_gc)) {
		gc = 1;
		S.gc_now = 0;
		S.next_gc = ev_now(S.loop) + S.conf->gc_interval +
		    jitter(S.conf->gc_interval / 20 < 5 ?
		    S.conf->gc_interval / 20 : 5);
	}
	switch (pid = fork()) {
	case -1:
		log_warn("fork maintenance");
		return -1;
	case 0:
		child_setup(parent);
		log_setrole("maintenance");
		proctitle_setrole("ade-maint", "maintenance");
		_exit(maint_main(S.conf, gc, S.holder));
	}
	S.maint_pid = pid;
	S.maint_again = 0;
	S.maint_signalled = 0;
	if (S.draining) {
		S.maint_stop_passes++;
		maint_guard(S.draining == 2 ? KILL_GRACE : MAINT_GRACE);
	}
	return 0;
}

/* Passes come every cleanup_interval, or stats_period when sooner. */
static double
maint_period(const struct conf *c)
{
	if (c->stats_period > 0 && c->stats_period < c->cleanup_interval)
		return c->stats_period;
	return c->cleanup_interval;
}

static void
maint_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	if (!S.draining || sb_orphans_pending() > 0)
		maint_spawn();
}

/* A worker is gone: stop what it left running, plan its successor. */
static void
reap_worker(int i, int status)
{
	struct slot *s = &S.slots[i];
	struct sb_slot *sb = &scoreboard->slots[i];
	double lived = ev_now(S.loop) - s->started;
	char how[96], why[128];
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1, killed;

	/* Engines may run as a user of their own: so does the kill. */
	priv_engine_enter();
	killed = sb->engine_pgid > 0 && kill(-sb->engine_pgid, SIGKILL) == 0;
	priv_engine_leave();
	if (killed)
		log_notice("worker %d: killed its engine process group %ld",
		    i, (long)sb->engine_pgid);
	kill_strays();
	describe(status, how, sizeof(how));
	if (sb->claim_kind != SB_CLAIM_NONE || sb->claim_next[0] != '\0') {
		snprintf(why, sizeof(why), "worker died (%s)", how);
		if (sb_orphan_add(sb, why) == 1)
			maint_spawn();
	}
	sb->pid = 0;
	sb->engine_pgid = 0;
	sb->asleep = 0;
	sb->claim_kind = SB_CLAIM_NONE;
	sb->claim_next[0] = '\0';
	sb->last_status = status;
	s->pid = 0;
	sb_poller_gone(i);

	if (code == WORKER_EXIT_CONFIG) {
		s->failed = 1;
		sb->state = SB_FAILED;
		snprintf(sb->last_error, sizeof(sb->last_error),
		    "exit 78: configuration or schema error");
		log_error("worker %d %s: a configuration or schema error; "
		    "not restarting it (fix it, then reload or restart)", i,
		    how);
		return;
	}
	sb->state = SB_EMPTY;
	if (S.draining || !s->active)
		return;
	if (S.exit_when_idle && code == WORKER_EXIT_OK && !s->replace) {
		log_info("worker %d finished: the queue is drained", i);
		return;
	}
	if (s->replace || code == WORKER_EXIT_RECYCLE) {
		s->delay = 0;
		log_info("worker %d %s; starting its replacement", i, how);
	} else {
		if (lived >= S.conf->stable_seconds)
			s->delay = RESTART_FLOOR;
		else
			s->delay = s->delay < RESTART_FLOOR ? RESTART_FLOOR :
			    s->delay * 2 > RESTART_CEILING ? RESTART_CEILING :
			    s->delay * 2;
		log_warnx("worker %d %s after %.1f s; restarting in %.0f s",
		    i, how, lived, s->delay);
		snprintf(sb->last_error, sizeof(sb->last_error), "%s", how);
	}
	/* Never start a slot more often than once a second. */
	if (lived < RESTART_FLOOR && s->delay < RESTART_FLOOR - lived)
		s->delay = RESTART_FLOOR - lived;
	ev_timer_set(&s->respawn, s->delay, 0);
	ev_timer_start(S.loop, &s->respawn);
}

/* Whether pid is a worker or the maintenance process. */
static int
own_child(pid_t pid)
{
	int i;

	if (pid == S.maint_pid || pid == S.http_pid)
		return 1;
	for (i = 0; i < SB_MAX_SLOTS; i++)
		if (S.slots[i].pid == pid)
			return 1;
	return 0;
}

/*
 * The supervisor is the reaper of the orphans below it: what a dead
 * worker's engine left running, also a process that detached from the
 * engine's group, becomes its child.  Any child that is neither a worker
 * nor the maintenance process is such a leftover and is killed; child_cb
 * reaps it, and looks again, since its own children then come up too.
 */
static void
kill_strays(void)
{
	int n;

	priv_engine_enter();
	n = proc_kill_children(own_child);
	priv_engine_leave();
	if (n > 0)
		log_notice("killed %d process%s a dead worker left behind", n,
		    n == 1 ? "" : "es");
}

static void
child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	char how[96];
	int i;

	if (w->rpid == S.maint_pid) {
		S.maint_pid = 0;
		S.maint_signalled = 0;
		ev_timer_stop(loop, &S.maint_guard);
		if (!WIFEXITED(w->rstatus) || WEXITSTATUS(w->rstatus) != 0)
			log_warnx("maintenance %s",
			    describe(w->rstatus, how, sizeof(how)));
		/*
		 * A pass that the timer asked for meanwhile runs now, unless
		 * --exit-when-idle has nothing left to wait for: a pass that
		 * takes longer than cleanup_interval would otherwise keep the
		 * supervisor from ever finishing.
		 */
		if (sb_orphans_pending() > 0 || (S.maint_again &&
		    !(S.exit_when_idle && workers_left() == 0)))
			maint_spawn();
		maybe_done();
		return;
	}
	if (w->rpid == S.http_pid) {
		reap_http(w->rstatus);
		maybe_done();
		return;
	}
	for (i = 0; i < SB_MAX_SLOTS; i++)
		if (S.slots[i].pid == w->rpid) {
			reap_worker(i, w->rstatus);
			break;
		}
	if (i == SB_MAX_SLOTS)
		kill_strays();
	maybe_done();
}

/* How many workers run or are about to be started again. */
static int
workers_left(void)
{
	int i, n = 0;

	for (i = 0; i < SB_MAX_SLOTS; i++)
		n += S.slots[i].pid != 0 || ev_is_active(&S.slots[i].respawn);
	return n;
}

/* Leaves the loop once nothing is left to wait for. */
static void
maybe_done(void)
{
	int i, failed = 0;

	for (i = 0; i < SB_MAX_SLOTS; i++)
		failed += S.slots[i].active && S.slots[i].failed;
	if (workers_left() > 0)
		return;
	/*
	 * Every worker stopped on a configuration or schema error: nothing
	 * will change until someone fixes it, so say so with our own exit.
	 */
	if (S.wanted > 0 && failed == S.wanted && !S.draining) {
		log_error("every worker failed on a configuration or schema "
		    "error; stopping");
		S.exit_code = WORKER_EXIT_CONFIG;
		S.draining = 2;
	}
	if (S.draining || S.exit_when_idle) {
		if (S.maint_pid != 0)
			return;
		if (sb_orphans_pending() > 0 && maint_spawn() == 0)
			return;
		/* The endpoint answers probes until the workers are gone. */
		ev_timer_stop(S.loop, &S.http_respawn);
		if (S.http_pid != 0) {
			if (!S.http_stopping)
				kill(S.http_pid, SIGTERM);
			S.http_stopping = 1;
			return;
		}
		ev_break(S.loop, EVBREAK_ALL);
	}
}

static void
signal_workers(int sig)
{
	int i;

	for (i = 0; i < SB_MAX_SLOTS; i++)
		if (S.slots[i].pid != 0)
			kill(S.slots[i].pid, sig);
}

/*
 * Asks a worker to finish its job and exit.  Only once: a worker takes a
 * second TERM for QUIT, and the run it holds would be put back.
 */
static void
stop_worker(int i)
{
	struct slot *s = &S.slots[i];

	if (s->pid == 0 || s->stopping)
		return;
	s->stopping = 1;
	kill(s->pid, SIGTERM);
}

static void
kill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_warnx("workers still running %.0f s after QUIT; killing them",
	    KILL_GRACE);
	signal_workers(SIGKILL);
	maint_signal(SIGKILL);
	if (S.http_pid != 0)
		kill(S.http_pid, SIGKILL);
}

static void
quit(void)
{
	int i;

	if (S.draining == 2)
		return;
	S.draining = 2;
	scoreboard->draining = 1;
	log_notice("fast stop: stopping engines and releasing claims");
	for (i = 0; i < SB_MAX_SLOTS; i++)
		ev_timer_stop(S.loop, &S.slots[i].respawn);
	ev_timer_stop(S.loop, &S.drain_timer);
	signal_workers(SIGQUIT);
	/* A pass that is running stops too; a new one releases orphans. */
	if (S.maint_pid != 0 && S.maint_signalled == 0) {
		maint_signal(SIGQUIT);
		ev_timer_stop(S.loop, &S.maint_guard);
		maint_guard(KILL_GRACE);
	}
	ev_timer_set(&S.kill_timer, KILL_GRACE, 0);
	ev_timer_start(S.loop, &S.kill_timer);
	maybe_done();
}

static void
drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_notice("drain_timeout (%.0f s) reached", S.conf->drain_timeout);
	quit();
}

static void
drain(void)
{
	int i;

	if (S.draining) {
		quit();		/* the second request escalates */
		return;
	}
	S.draining = 1;
	scoreboard->draining = 1;
	log_notice("draining: no new claims; waiting up to %.0f s for "
	    "running jobs", S.conf->drain_timeout);
	for (i = 0; i < SB_MAX_SLOTS; i++) {
		ev_timer_stop(S.loop, &S.slots[i].respawn);
		stop_worker(i);
	}
	ev_timer_set(&S.drain_timer, S.conf->drain_timeout, 0);
	ev_timer_start(S.loop, &S.drain_timer);
	maint_guard(MAINT_GRACE);
	maybe_done();
}

/*
 * Whether a worker is between announcing a claim and learning which row
 * it got: it holds nothing yet, and most such claims find nothing.
 */
static int
sb_claiming(const struct sb_slot *sb)
{
	return sb->claim_kind != SB_CLAIM_NONE && sb->claim_id[0] == '\0';
}

/*
 * Which worker to retire first when scaling down: a slot without a
 * worker, then one already on its way out, then an idle one, then one
 * in the middle of a claim; a worker with a job only when nothing else
 * is left.
 */
static int
retire_rank(int i)
{
	struct slot *s = &S.slots[i];
	struct sb_slot *sb = &scoreboard->slots[i];

	if (s->pid == 0)
		return 0;
	if (s->stopping)
		return 1;
	if (sb->state == SB_IDLE || sb->state == SB_STARTING ||
	    sb->state == SB_EMPTY)
		return sb->claim_kind == SB_CLAIM_NONE ? 2 :
		    sb_claiming(sb) ? 3 : 4;
	return 4;
}

static void
scale(int n)
{
	struct slot *s;
	int i, best, active = 0;

	if (n < 0)
		n = 0;
	if (n > SB_MAX_SLOTS)
		n = SB_MAX_SLOTS;
	log_notice("workers: %d -> %d", S.wanted, n);
	S.wanted = n;
	scoreboard->wanted = n;
	for (i = 0; i < SB_MAX_SLOTS; i++)
		active += S.slots[i].active;
	/* Free slots first; then slots whose retiring worker still runs. */
	for (i = 0; i < SB_MAX_SLOTS && active < n; i++) {
		s = &S.slots[i];
		if (s->active || s->pid != 0)
			continue;
		s->active = 1;
		s->failed = 0;
		s->delay = 0;
		active++;
		spawn(i);
	}
	for (i = 0; i < SB_MAX_SLOTS && active < n; i++) {
		s = &S.slots[i];
		if (s->active)
			continue;
		s->active = 1;
		s->replace = 1;
		active++;
	}
	while (active > n) {
		best = -1;
		for (i = SB_MAX_SLOTS - 1; i >= 0; i--)
			if (S.slots[i].active && (best == -1 ||
			    retire_rank(i) < retire_rank(best)))
				best = i;
		s = &S.slots[best];
		s->active = 0;
		s->replace = 0;
		ev_timer_stop(S.loop, &s->respawn);
		stop_worker(best);
		active--;
	}
}

/*
 * Reads the configuration again.  An invalid file changes nothing; keys
 * that need a restart keep their old values.  Workers are replaced one
 * by one as they finish what they are doing.
 */
static int
reload(struct buf *out)
{
	struct conf *nc = conf_new();
	struct buf errs, changed;
	enum log_level level;
	int i;

	buf_init(&errs);
	if (conf_load(nc, S.conf_path, &errs) == -1) {
		char *line, *save;

		for (line = strtok_r(errs.data, "\n", &save); line != NULL;
		    line = strtok_r(NULL, "\n", &save))
			log_error("reload: %s", line);
		log_error("reload: the configuration is invalid; keeping "
		    "the old one");
		if (out != NULL)
			buf_printf(out, "error: invalid configuration: %s",
			    errs.data);
		buf_free(&errs);
		conf_free(nc);
		return -1;
	}
	buf_free(&errs);
	buf_init(&changed);
	conf_keep_static(nc, S.conf, &changed);
	if (changed.len > 0)
		log_warnx("reload: %s changed; that needs a restart",
		    buf_str(&changed));
	buf_free(&changed);
	conf_free(S.conf);
	S.conf = nc;
	S.generation++;
	/*
	 * Retire the surplus before replacing the rest, so that idle workers
	 * go rather than busy ones; new slots start with the new settings.
	 */
	if ((int)nc->workers != S.wanted)
		scale((int)nc->workers);
	if (log_parse_level(nc->log_level, &level) == 0)
		log_setlevel(level);
	ev_timer_set(&S.maint_timer, maint_period(nc), maint_period(nc));
	ev_timer_again(S.loop, &S.maint_timer);
	/*
	 * Idle workers exit at once and busy ones after their job; each
	 * slot's successor starts with the new configuration.  A worker
	 * already stopping is not signalled again: its successor reads
	 * the newest configuration anyway.
	 */
	log_notice("configuration reloaded; replacing workers");
	for (i = 0; i < SB_MAX_SLOTS; i++)
		if (S.slots[i].active && S.slots[i].pid != 0 &&
		    S.slots[i].generation != S.generation) {
			S.slots[i].replace = 1;
			stop_worker(i);
		}
	return 0;
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	switch (w->signum) {
	case SIGTERM:
	case SIGINT:
		drain();
		break;
	case SIGQUIT:
		quit();
		break;
	case SIGHUP:
		if (!S.draining)
			reload(NULL);
		break;
	case SIGUSR1:
		log_reopen();
		log_notice("log files reopened");
		signal_workers(SIGUSR1);
		break;
	}
}

static void
on_scale_signal(int sig)
{
	if (sig == SIGTTIN)
		scale_ups++;
	else
		scale_downs++;
	ev_async_send(S.loop, &S.scale_async);
}

static void
scale_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	int ups = scale_ups, downs = scale_downs;
	int n = (ups - S.ups_seen) - (downs - S.downs_seen);

	S.ups_seen = ups;
	S.downs_seen = downs;
	if (n != 0 && !S.draining)
		scale(S.wanted + n);
}

static json_t *
status_json(void)
{
	json_t *slots = json_array(), *o;
	struct sb_slot *sb;
	int i;

	for (i = 0; i < SB_MAX_SLOTS; i++) {
		sb = &scoreboard->slots[i];
		if (!S.slots[i].active && sb->pid == 0 && !S.slots[i].failed)
			continue;
		o = json_pack("{s:i, s:I, s:s, s:I, s:I, s:I}", "slot", i,
		    "pid", (json_int_t)sb->pid, "state", sb_claiming(sb) &&
		    sb->state == SB_IDLE ? "claiming" :
		    sb_state_name(sb->state), "since", (json_int_t)sb->since,
		    "jobs_done", (json_int_t)sb->jobs_done,
		    "engine_pgid", (json_int_t)sb->engine_pgid);
		if (sb->claim_kind != SB_CLAIM_NONE && !sb_claiming(sb)) {
			json_object_set_new(o, "claim_kind", json_string(
			    sb->claim_kind == SB_CLAIM_RUN ? "run" :
			    "environment"));
			json_object_set_new(o, "claim_id",
			    json_string(sb->claim_id));
		}
		if (sb->claim_kind != SB_CLAIM_NONE && sb->step[0] != '\0') {
			char step[sizeof(sb->step)];

			memcpy(step, sb->step, sizeof(step));
			step[sizeof(step) - 1] = '\0';
			json_object_set_new(o, "step", json_string(step));
			json_object_set_new(o, "step_seconds", json_integer(
			    (json_int_t)(time(NULL) - sb->step_since)));
		}
		if (scoreboard->poller == i + 1 && sb->state == SB_IDLE)
			json_object_set_new(o, "looking", json_true());
		if (sb->asleep && sb->state == SB_IDLE)
			json_object_set_new(o, "asleep", json_true());
		if (sb->last_error[0] != '\0')
			json_object_set_new(o, "last_error",
			    json_string(sb->last_error));
		json_array_append_new(slots, o);
	}
	return json_pack("{s:I, s:I, s:i, s:s, s:I, s:I, s:i, s:o}",
	    "pid", (json_int_t)getpid(), "started", (json_int_t)S.started,
	    "workers", S.wanted, "state", S.draining == 0 ? "running" :
	    S.draining == 1 ? "draining" : "stopping",
	    "maintenance_pid", (json_int_t)S.maint_pid,
	    "http_pid", (json_int_t)S.http_pid,
	    "orphans_pending", sb_orphans_pending(), "slots", slots);
}

/* Carries out one request; the answer goes to out. */
static void
control_request(const char *req, struct buf *out)
{
	json_t *j;
	char *s;

	if (strcmp(req, "status") == 0) {
		j = status_json();
		s = json_dumps(j, JSON_COMPACT);
		buf_printf(out, "%s", s);
		free(s);
		json_decref(j);
	} else if (strcmp(req, "drain") == 0) {
		buf_addstr(out, "ok draining");
		drain();
	} else if (strcmp(req, "reload") == 0) {
		if (S.draining)
			buf_addstr(out, "error: stopping");
		else if (reload(out) == 0)
			buf_addstr(out, "ok reloaded");
	} else if (strncmp(req, "scale ", 6) == 0) {
		char *end;
		long v = strtol(req + 6, &end, 10);

		if (*end != '\0' || v < 0 || v > SB_MAX_SLOTS)
			buf_printf(out, "error: scale wants 0 to %d",
			    SB_MAX_SLOTS);
		else if (S.draining)
			buf_addstr(out, "error: stopping");
		else {
			scale((int)v);
			buf_printf(out, "ok workers %ld", v);
		}
	} else if (strcmp(req, "gc") == 0) {
		S.gc_now = 1;
		maint_spawn();
		buf_addstr(out, "ok gc started");
	} else
		buf_addstr(out, "error: unknown command (status, drain, "
		    "reload, scale N, gc)");
	buf_addstr(out, "\n");
}

/*
 * db-lib has no call that sets TLS on a login: it comes from
 * freetds.conf alone, so a stricter setting here is a reminder.
 */
static void
tls_reminder(const struct conf *c)
{
	if (strcmp(c->db_backend, "mssql") == 0 &&
	    ((strcmp(c->db_encrypt, "optional") != 0 &&
	    strcmp(c->db_encrypt, "no") != 0) || !c->db_trust_server_cert))
		log_warnx("encrypt = %s, trust_server_certificate = %s: "
		    "FreeTDS takes TLS from freetds.conf only; make sure the "
		    "server's section sets \"encryption = require\" and a "
		    "\"ca file\"", c->db_encrypt,
		    c->db_trust_server_cert ? "yes" : "no");
}

/* The event loop and its watchers: signals, children, timers, control. */
static void
loop_setup(const struct conf *c)
{
	static const int sigs[] = {
		SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1
	};
	struct sigaction sa;
	size_t i;

	S.loop = ev_default_loop(EVFLAG_AUTO);
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < NELEM(sigs); i++) {
		ev_signal_init(&S.sigs[i], signal_cb, sigs[i]);
		ev_signal_start(S.loop, &S.sigs[i]);
	}
	ev_async_init(&S.scale_async, scale_cb);
	ev_async_start(S.loop, &S.scale_async);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_scale_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTTIN);
	sigaddset(&sa.sa_mask, SIGTTOU);
	sigaction(SIGTTIN, &sa, NULL);
	sigaction(SIGTTOU, &sa, NULL);
	ev_child_init(&S.child, child_cb, 0, 0);
	ev_child_start(S.loop, &S.child);
	control_start(S.loop, control_request);
	ev_timer_init(&S.drain_timer, drain_cb, 0, 0);
	ev_timer_init(&S.kill_timer, kill_cb, 0, 0);
	ev_timer_init(&S.maint_guard, maint_guard_cb, 0, 0);
	ev_timer_init(&S.http_respawn, http_respawn_cb, 0, 0);
	ev_timer_init(&S.maint_timer, maint_cb, maint_period(c),
	    maint_period(c));
	ev_timer_start(S.loop, &S.maint_timer);
	S.next_gc = ev_now(S.loop) + c->gc_interval;
	for (i = 0; i < SB_MAX_SLOTS; i++)
		ev_timer_init(&S.slots[i].respawn, respawn_cb, 0, 0);
}

int
super_run(struct conf *c, const char *conf_path, int exit_when_idle,
    int *ready_fd, const char *pidfile)
{
	char host[128];
	size_t i;

	memset(&S, 0, sizeof(S));
	S.conf = c;
	S.pidfile = pidfile != NULL ? xstrdup(pidfile) : NULL;
	S.ready_fd = ready_fd;
	S.conf_path = conf_path;
	S.exit_when_idle = exit_when_idle;
	S.wanted = (int)c->workers;
	S.started = time(NULL);
	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "host");
	host[sizeof(host) - 1] = '\0';
	snprintf(S.holder, sizeof(S.holder), "%s:%ld", host, (long)getpid());
	proctitle_setrole(NULL, "supervisor");
	/* What dead workers leave running comes to the supervisor. */
	if (proc_adopt_orphans() == -1)
		log_warn("cannot become the reaper of orphaned engines");
	if (sb_create() == -1) {
		log_error("cannot map the scoreboard: %s", strerror(errno));
		S.exit_code = WORKER_EXIT_ERROR;
		goto out;
	}
	scoreboard->started = time(NULL);
	/* Without it, every idle worker looks for work by itself. */
	if (sb_idle_setup() == -1)
		log_warn("eventfd");
	if (control_listen(c->socket_path, c->socket_mode) == -1) {
		log_error("control socket %s: %s", c->socket_path,
		    errno == EADDRINUSE ? "another ade-superd answers on it" :
		    strerror(errno));
		S.exit_code = WORKER_EXIT_CONFIG;
		goto out;
	}
	loop_setup(c);
	for (i = 0; i < (size_t)S.wanted; i++) {
		S.slots[i].active = 1;
		spawn((int)i);
	}
	scoreboard->wanted = S.wanted;
	/* One pass at start: recover what a previous run left behind. */
	maint_spawn();
	http_spawn();
	if (S.pidfile != NULL && pidfile_write(S.pidfile) == -1) {
		log_error("cannot write pidfile %s: %s", S.pidfile,
		    strerror(errno));
		S.exit_code = WORKER_EXIT_CONFIG;
		quit();
	}
	log_notice("supervisor started: %d worker%s, control socket %s",
	    S.wanted, PLURAL(S.wanted), c->socket_path);
	tls_reminder(c);
	if (S.exit_code == 0) {
		log_echo(-1);
		if (*ready_fd != -1) {
			if (write(*ready_fd, "\0" "0", 2) == -1)
				log_warn("ready pipe");
			close(*ready_fd);
			*ready_fd = -1;
		}
	}
	ev_run(S.loop, 0);
	control_stop();
	if (S.pidfile != NULL)
		unlink(S.pidfile);
	log_notice("supervisor stopped");
out:
	free(S.pidfile);
	conf_free(S.conf);
	S.conf = NULL;
	return S.exit_code;
}
