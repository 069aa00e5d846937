/*
 * The scoreboard: one slot per worker in memory shared between the
 * supervisor and its children.  A worker writes its own slot (state,
 * the claim it holds, its engine's process group); the supervisor reads
 * them for status and, when a worker dies, to stop its engine and have
 * its claim released.
 */
#ifndef ADE_SCOREBOARD_H
#define ADE_SCOREBOARD_H

#include <sys/types.h>

#include <time.h>

#define SB_MAX_SLOTS	256

enum sb_state {
	SB_EMPTY,
	SB_STARTING,
	SB_IDLE,
	SB_BUILDING,
	SB_RUNNING,
	SB_STOPPING,
	SB_FAILED	/* exited with EX_CONFIG; not restarted */
};

enum sb_claim {
	SB_CLAIM_NONE,
	SB_CLAIM_RUN,
	SB_CLAIM_ENV
};

/*
 * A claim with a token but no id is one being made: the worker may die
 * after the database committed it and before it learnt the row's id,
 * and the token is all it takes to find and release that row.
 */
struct sb_slot {
	volatile pid_t		pid;
	volatile pid_t		engine_pgid;
	volatile int		state;
	volatile int		claim_kind;
	char			claim_id[64];
	char			claim_token[192];
	/*
	 * The token of a run claimed ahead, with the success of the job in
	 * hand (store_claim_ahead), until that run is the claim above.
	 */
	char			claim_next[192];
	volatile time_t		since;
	volatile time_t		started;
	volatile long		jobs_done;
	volatile long		restarts;
	volatile int		last_status;	/* wait status */
	char			last_error[160];
	char			step[32];	/* of the job: "venv", "engine" */
	volatile time_t		step_since;
	volatile int		asleep;		/* idle, waiting to be woken */
};

/* A claim whose worker died, waiting for the maintenance process. */
struct sb_orphan {
	volatile int	pending;
	int		kind;
	char		id[64];
	char		token[192];
	char		why[128];
};

#define SB_MAX_ORPHANS	(2 * SB_MAX_SLOTS)

/* How an attempt at a run ended, as this host's counters know it. */
enum sb_run_outcome {
	SB_RUN_SUCCEEDED,
	SB_RUN_FAILED,		/* for good */
	SB_RUN_RETRIED,		/* failed, queued again for a later attempt */
	SB_RUN_CANCELLED,
	SB_RUN_LOST,		/* the claim was taken back */
	SB_RUN_RELEASED,	/* put back without using up the attempt */
	SB_RUN_OUTCOMES
};

enum sb_build_outcome {
	SB_BUILD_READY,
	SB_BUILD_FAILED,
	SB_BUILD_LOST,
	SB_BUILD_OUTCOMES
};

/*
 * A histogram of durations in seconds: counts per upper bound (the last
 * bucket has none), their total in milliseconds.  Bounds in sb_bounds.
 */
#define SB_BUCKETS	14
struct sb_hist {
	volatile long	bucket[SB_BUCKETS + 1];
	volatile long	count;
	volatile long	sum_ms;
};

/*
 * This host's counters since the supervisor started, added to by every
 * process with atomic operations.  They feed the metrics endpoint and the
 * periodic stats line.
 */
struct sb_counters {
	volatile long	runs[SB_RUN_OUTCOMES];
	volatile long	builds[SB_BUILD_OUTCOMES];
	volatile long	claims_run;
	volatile long	claims_env;
	volatile long	db_errors;
	volatile long	db_reconnects;
	volatile long	worker_restarts;
	struct sb_hist	run_duration;	/* one attempt, claim to finish */
	struct sb_hist	pickup_wait;	/* a run due to its claim */
	struct sb_hist	build_duration;
};

/* The figures of the last stats line, to log the next as differences. */
struct sb_stats_mark {
	volatile time_t	at;		/* 0 before the first line */
	long		runs[SB_RUN_OUTCOMES];
	long		wait_count, wait_ms, run_count, run_ms;
};

/* One point of the dashboard's charts, taken with each stats line. */
#define SB_HISTORY	120
struct sb_point {
	time_t	at;
	long	due;		/* queue depth */
	long	finished;	/* runs finished since the point before */
	double	seconds;	/* since the point before */
};

struct scoreboard {
	struct sb_slot		slots[SB_MAX_SLOTS];
	struct sb_orphan	orphans[SB_MAX_ORPHANS];
	struct sb_counters	counters;
	struct sb_stats_mark	stats_mark;
	volatile time_t		started;	/* the supervisor's start */
	volatile int		wanted;		/* workers, as scaled */
	volatile int		draining;	/* the supervisor stops */
	struct sb_point		history[SB_HISTORY];	/* a ring */
	volatile unsigned	history_next;
	volatile int		poller;		/* slot + 1 of the idle worker
						   that looks for work; 0: none */
	volatile int		sleepers;	/* idle workers in sb_idle_sleep */
};

extern const double	sb_bounds[SB_BUCKETS];

extern struct scoreboard	*scoreboard;
extern struct sb_slot		*sb_self;	/* a worker's own slot */
extern int			 sb_idle_fd;	/* wakes a sleeping idle worker */

int		 sb_create(void);
int		 sb_idle_setup(void);
int		 sb_poller_take(void);
int		 sb_poller_is_self(void);
void		 sb_poller_leave(void);
void		 sb_poller_gone(int slot);
void		 sb_pass_on(void);
int		 sb_idle_sleep(int stop_fd, double timeout);
void		 sb_set_state(enum sb_state);
void		 sb_set_claim(enum sb_claim, const char *id, const char *token);
void		 sb_set_claiming(enum sb_claim, const char *token);
void		 sb_set_claim_next(const char *token);
void		 sb_set_error(const char *);
void		 sb_set_step(const char *);
const char	*sb_state_name(int);
int		 sb_orphan_add(const struct sb_slot *, const char *why);
int		 sb_orphans_pending(void);
void		 sb_count(volatile long *);
void		 sb_observe(struct sb_hist *, double seconds);
void		 sb_count_run(enum sb_run_outcome, double seconds);
void		 sb_count_build(enum sb_build_outcome, double seconds);

#endif
