/*
 * The scoreboard lives in an anonymous shared mapping made before the
 * first fork, so every worker sees the same memory as the supervisor.
 * Each slot has one writer at a time (its worker, or the supervisor once
 * that worker is gone); readers may see a slot half-updated, which only
 * matters for display.  The claim fields are written before the state
 * that says they are valid.
 */
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scoreboard.h"
#include "util.h"

struct scoreboard	*scoreboard;
struct sb_slot		*sb_self;
int			 sb_idle_fd = -1;

int
sb_create(void)
{
	void *p;

	p = mmap(NULL, sizeof(struct scoreboard), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	memset(p, 0, sizeof(struct scoreboard));
	scoreboard = p;
	return 0;
}

void
sb_set_state(enum sb_state st)
{
	if (sb_self == NULL)
		return;
	sb_self->state = st;
	sb_self->since = time(NULL);
}

void
sb_set_claim(enum sb_claim kind, const char *id, const char *token)
{
	if (sb_self == NULL)
		return;
	if (kind == SB_CLAIM_NONE) {
		sb_self->claim_kind = SB_CLAIM_NONE;
		__sync_synchronize();
		sb_self->claim_id[0] = sb_self->claim_token[0] = '\0';
		return;
	}
	snprintf(sb_self->claim_id, sizeof(sb_self->claim_id), "%s", id);
	snprintf(sb_self->claim_token, sizeof(sb_self->claim_token), "%s",
	    token);
	__sync_synchronize();
	sb_self->claim_kind = kind;
}

/*
 * Records the token of a claim about to be made, before the database
 * commits it: a worker that dies before sb_set_claim names the row
 * leaves its token behind, and the claim is released by it at once
 * instead of when its lease expires.
 */
void
sb_set_claiming(enum sb_claim kind, const char *token)
{
	sb_set_claim(kind, "", token);
}

/* The token of a run claimed ahead (scoreboard.h); NULL clears it. */
void
sb_set_claim_next(const char *token)
{
	if (sb_self == NULL)
		return;
	if (token == NULL)
		sb_self->claim_next[0] = '\0';
	else
		snprintf(sb_self->claim_next, sizeof(sb_self->claim_next),
		    "%s", token);
}

/*
 * The step of the job in hand, for status: a scope such as
 * "environment.venv" is shown as "venv"; NULL clears it.
 */
void
sb_set_step(const char *scope)
{
	const char *dot;

	if (sb_self == NULL)
		return;
	if (scope == NULL) {
		sb_self->step[0] = '\0';
		return;
	}
	dot = strchr(scope, '.');
	sb_self->step_since = time(NULL);
	snprintf(sb_self->step, sizeof(sb_self->step), "%s",
	    dot != NULL ? dot + 1 : scope);
}

void
sb_set_error(const char *msg)
{
	if (sb_self != NULL)
		snprintf(sb_self->last_error, sizeof(sb_self->last_error),
		    "%s", msg);
}

static int
orphan_add(int kind, const char *id, const char *token, const char *why)
{
	struct sb_orphan *o;
	size_t i;

	for (i = 0; i < SB_MAX_ORPHANS; i++) {
		o = &scoreboard->orphans[i];
		if (o->pending)
			continue;
		o->kind = kind;
		snprintf(o->id, sizeof(o->id), "%s", id);
		snprintf(o->token, sizeof(o->token), "%s", token);
		snprintf(o->why, sizeof(o->why), "%s", why);
		__sync_synchronize();
		o->pending = 1;
		return 1;
	}
	return -1;	/* full: the lease sweep will recover it */
}

/*
 * Records the claims a dead worker held, that of its job and that of a
 * run claimed ahead, for the maintenance process to release.  Written by
 * the supervisor only.  1 when there was one, 0 when there was none, -1
 * when the list is full.
 */
int
sb_orphan_add(const struct sb_slot *s, const char *why)
{
	int rc = 0;

	if (s->claim_kind != SB_CLAIM_NONE)
		rc = orphan_add(s->claim_kind, s->claim_id, s->claim_token,
		    why);
	/* A run claimed ahead has no id here: its token finds it. */
	if (rc >= 0 && s->claim_next[0] != '\0' && (s->claim_kind ==
	    SB_CLAIM_NONE || strcmp(s->claim_next, s->claim_token) != 0))
		rc = orphan_add(SB_CLAIM_RUN, "", s->claim_next, why);
	return rc;
}

int
sb_orphans_pending(void)
{
	size_t i;
	int n = 0;

	for (i = 0; i < SB_MAX_ORPHANS; i++)
		n += scoreboard->orphans[i].pending != 0;
	return n;
}

const char *
sb_state_name(int st)
{
	static const char *const names[] = {
		"empty", "starting", "idle", "building", "running",
		"stopping", "failed"
	};

	return st >= 0 && st <= SB_FAILED ? names[st] : "unknown";
}

/*
 * Upper bounds of the histogram buckets in seconds: from a fast engine's
 * tens of milliseconds to the hour an environment build may take.
 */
const double sb_bounds[SB_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
};

void
sb_count(volatile long *c)
{
	if (scoreboard != NULL)
		__atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

void
sb_observe(struct sb_hist *h, double seconds)
{
	size_t i;

	if (scoreboard == NULL)
		return;
	if (seconds < 0)
		seconds = 0;
	for (i = 0; i < SB_BUCKETS && seconds > sb_bounds[i]; i++)
		;
	__atomic_add_fetch(&h->bucket[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum_ms, (long)(seconds * 1000.0 + 0.5),
	    __ATOMIC_RELAXED);
	/* Last: a reader that sees the count sees its bucket. */
	__atomic_add_fetch(&h->count, 1, __ATOMIC_RELEASE);
}

/* An attempt at a run ended after seconds since its claim. */
void
sb_count_run(enum sb_run_outcome o, double seconds)
{
	if (scoreboard == NULL)
		return;
	sb_observe(&scoreboard->counters.run_duration, seconds);
	sb_count(&scoreboard->counters.runs[o]);
}

void
sb_count_build(enum sb_build_outcome o, double seconds)
{
	if (scoreboard == NULL)
		return;
	sb_observe(&scoreboard->counters.build_duration, seconds);
	sb_count(&scoreboard->counters.builds[o]);
}

/*
 * Idle workers.  Of a host's idle workers one, the poller, looks for work
 * (it waits for a notification, or polls); the others sleep on an
 * eventfd that the supervisor made before the first fork, in semaphore
 * mode, so that each wake lets exactly one of them go.  A worker that
 * finds work gives up the poller's role and wakes one sleeper, which
 * looks in turn: it finds work too and wakes the next, or it becomes the
 * poller.  A burst of runs thus spreads over the idle workers one claim
 * at a time, and an idle host sends the statements of one worker,
 * whatever their number, with no random delay anywhere.
 *
 * The supervisor frees the role of a worker that died and wakes a
 * sleeper; a sleeper also looks by itself after its timeout, so a wake
 * that went astray costs time, never a run.
 */
int
sb_idle_setup(void)
{
	sb_idle_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
	return sb_idle_fd == -1 ? -1 : 0;
}

static int
self_mark(void)
{
	return sb_self != NULL ? (int)(sb_self - scoreboard->slots) + 1 : 0;
}

/* Whether this worker is the poller now (taking the role if it is free). */
int
sb_poller_take(void)
{
	int me = self_mark();

	if (me == 0 || sb_idle_fd == -1)
		return 1;	/* alone: it polls for itself */
	return scoreboard->poller == me ||
	    __sync_bool_compare_and_swap(&scoreboard->poller, 0, me);
}

int
sb_poller_is_self(void)
{
	int me = self_mark();

	return me != 0 && scoreboard->poller == me;
}

void
sb_poller_leave(void)
{
	int me = self_mark();

	if (me != 0)
		(void)__sync_bool_compare_and_swap(&scoreboard->poller, me, 0);
}

static void
wake_one(void)
{
	uint64_t one = 1;

	if (sb_idle_fd != -1 && scoreboard->sleepers > 0)
		(void)write(sb_idle_fd, &one, sizeof(one));
}

/* The supervisor: a worker that died held the role, perhaps. */
void
sb_poller_gone(int slot)
{
	if (__sync_bool_compare_and_swap(&scoreboard->poller, slot + 1, 0))
		wake_one();
}

/*
 * This worker claimed a job, or leaves: someone else must look for the
 * next one.  When no idle worker looks, a sleeper goes.
 */
void
sb_pass_on(void)
{
	if (sb_self == NULL || sb_idle_fd == -1)
		return;
	sb_poller_leave();
	if (scoreboard->poller == 0)
		wake_one();
}

/*
 * Sleeps until woken to look for work (1), or until the timeout, a stop
 * (stop_fd readable) or a signal (0).
 */
int
sb_idle_sleep(int stop_fd, double timeout)
{
	struct pollfd pfd[2];
	double end = now_mono() + timeout, left;
	uint64_t n;
	int woken = 0;

	__sync_fetch_and_add(&scoreboard->sleepers, 1);
	if (sb_self != NULL)
		sb_self->asleep = 1;
	/* The role fell free while this worker came to sleep: take it. */
	if (scoreboard->poller == 0) {
		woken = 1;
		goto out;
	}
	while ((left = end - now_mono()) > 0) {
		pfd[0].fd = sb_idle_fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = stop_fd;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, (int)(left * 1000) + 1) <= 0 ||
		    pfd[1].revents != 0)
			break;
		/* Every sleeper sees it readable; one gets the wake. */
		if (read(sb_idle_fd, &n, sizeof(n)) == sizeof(n)) {
			woken = 1;
			break;
		}
		if (errno != EAGAIN)
			break;
	}
out:
	if (sb_self != NULL)
		sb_self->asleep = 0;
	__sync_fetch_and_sub(&scoreboard->sleepers, 1);
	return woken;
}
