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
	volatile time_t		since;
	volatile time_t		started;
	volatile long		jobs_done;
	volatile long		restarts;
	volatile int		last_status;	/* wait status */
	char			last_error[160];
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

struct scoreboard {
	struct sb_slot		slots[SB_MAX_SLOTS];
	struct sb_orphan	orphans[SB_MAX_ORPHANS];
};

extern struct scoreboard	*scoreboard;
extern struct sb_slot		*sb_self;	/* a worker's own slot */

int		 sb_create(void);
void		 sb_set_state(enum sb_state);
void		 sb_set_claim(enum sb_claim, const char *id, const char *token);
void		 sb_set_claiming(enum sb_claim, const char *token);
void		 sb_set_error(const char *);
const char	*sb_state_name(int);
int		 sb_orphan_add(const struct sb_slot *, const char *why);
int		 sb_orphans_pending(void);

#endif
