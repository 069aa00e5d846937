/*
 * The storage interface: every database operation the worker and ade-ctl
 * need, at the level of one queue operation each.  Three backends
 * implement it (sqlite, pgsql, mssql), each with SQL written for its own
 * dialect; nothing outside a backend file knows which library is used.
 *
 * Rules every backend follows:
 *  - time comes from the database server, never from the worker's clock;
 *  - a claim hands a row to exactly one caller, and writes a fresh
 *    fencing token into claimed_by;
 *  - heartbeats and finishes are guarded by status and that token and
 *    report whether they changed exactly one row (1) or not (0: the
 *    claim is lost);
 *  - values travel as parameters;
 *  - no transaction stays open between calls.
 *
 * Functions return -1 on a database error with a message in
 * store_error(); STORE_DEAD is returned instead when the connection is
 * gone and must be reopened.
 */
#ifndef ADE_STORE_H
#define ADE_STORE_H

#include <signal.h>
#include <stddef.h>

#include <jansson.h>

struct conf;
struct buf;

#define STORE_DEAD	(-2)

struct store;

struct env_claim {
	char	id[64];
	char	workspace_id[64];
	char	configuration_id[64];
	char	engine_spec[512];
	char	deps_digest[160];
};

struct run_claim {
	char	 id[64];
	char	 workspace_id[64];
	char	 configuration_id[64];
	char	 input_document_id[64];
	char	 engine_spec[512];
	char	 deps_digest[160];
	char	 env_id[64];
	char	 env_python[512];	/* the interpreter its row records */
	char	 started_at[40];
	double	 waited;		/* seconds from due to claimed */
	double	 claim_took;		/* seconds the claim call took */
	long	 attempt_count;
	long	 max_attempts;
	char	*run_options;		/* JSON text or NULL */
	char	*input_sheet_names;	/* JSON text or NULL */
	/*
	 * The input document's row, where the claim read it too (doc_read):
	 * doc_found says whether there is one.  Otherwise the worker asks
	 * for it with store_get_document.
	 */
	int	 doc_read;
	int	 doc_found;
	char	*doc_stored_uri;
	char	*doc_original_filename;
};

struct document {
	char	*stored_uri;
	char	*original_filename;
};

enum run_finish {
	FINISH_RETRY,		/* back to queued after delay seconds */
	FINISH_FAILED,		/* terminal */
	FINISH_RELEASE		/* back to queued; the attempt is not used */
};

/* The runs table at a glance, for stats lines and metrics. */
#define RUN_STATUSES	5	/* queued running succeeded failed cancelled */
struct queue_stats {
	long	runs[RUN_STATUSES];	/* by status, in that order */
	long	due;		/* queued runs whose time has come */
	double	oldest_due;	/* seconds the oldest of them has waited */
};

extern const char *const run_statuses[RUN_STATUSES];

/* What a store tells whoever counts: failures and reconnections. */
enum store_event {
	STORE_EV_ERROR,
	STORE_EV_RECONNECT
};

extern void	(*store_event_hook)(enum store_event);
void	store_event(enum store_event);

/*
 * Whoever owns the process's signals tells the backends when to give up
 * waiting on the database: stop (finish the job, then exit) ends only
 * the waits whose loss is harmless, quit ends every one.  Both unset:
 * no wait is cut short.
 */
void	store_set_interrupts(const volatile sig_atomic_t *stop,
	    const volatile sig_atomic_t *quit);
int	store_stopping(void);
int	store_quitting(void);

struct sweep_counts {
	long	runs_requeued;
	long	runs_failed;
	long	envs_requeued;
};

/* What ade-ctl enqueue inserts, once the files are in place. */
struct enqueue_req {
	const char	*workspace_id;
	const char	*configuration_id;
	const char	*content_digest;
	const char	*document_id;
	const char	*original_filename;
	const char	*stored_uri;
	const char	*document_sha256;
	long long	 document_size;
	const char	*content_type;
	const char	*run_id;
	const char	*engine_spec;
	const char	*deps_digest;
	const char	*run_options;		/* JSON text or NULL */
	const char	*input_sheet_names;	/* JSON text or NULL */
	long		 max_attempts;
};

struct store	*store_open(const struct conf *, struct buf *err);
struct store	*store_open_existing(const struct conf *, struct buf *err);
int		 store_open_failed_for_good(void);
void		 store_close(struct store *);
const char	*store_error(struct store *);
int		 store_dead(struct store *);
const char	*store_backend(struct store *);

int	store_init_schema(struct store *);
int	store_check_schema(struct store *, struct buf *missing,
	    struct buf *optional);
/* The tables and columns store_check_schema looks for, as JSON. */
json_t	*store_schema(void);

int	store_ensure_environments(struct store *, long *inserted,
	    long *requeued);
int	store_claim_environment(struct store *, const char *token,
	    double lease, struct env_claim *);
int	store_heartbeat_environment(struct store *, const char *id,
	    const char *token, double lease);
int	store_environment_ready(struct store *, const char *id,
	    const char *token, const char *python, const char *python_version,
	    const char *engine_version);
int	store_environment_failed(struct store *, const char *id,
	    const char *token, const char *error, double backoff_base,
	    double backoff_max, long *runs_charged);
int	store_environment_requeue(struct store *, const char *id,
	    const char *error);
int	store_environment_touch(struct store *, const char *id);

int	store_claim_run(struct store *, const char *token, double lease,
	    struct run_claim *);
/*
 * Claims ahead: the next store_run_succeeded also claims the next run,
 * with token and lease, in its transaction and round trip, on backends
 * that can (1; 0 when nothing is asked).  store_claimed_ahead then gives
 * the token (1, found telling whether a run was claimed; 0 when no
 * claim was made ahead), and store_claim_run with it returns that run,
 * or none, without a round trip.  A NULL token withdraws a request not yet used;
 * store_release_ahead gives back a run claimed ahead that will not be
 * run (its attempt is not used up).
 */
int	store_claim_ahead(struct store *, const char *token, double lease);
int	store_claimed_ahead(struct store *, char *token, size_t len,
	    int *found);
int	store_release_ahead(struct store *, const char *error);
void	store_run_claim_free(struct run_claim *);
int	store_heartbeat_run(struct store *, const char *id, const char *token,
	    double lease);
int	store_get_document(struct store *, const char *id, struct document *);
void	store_document_free(struct document *);
int	store_run_succeeded(struct store *, const char *id, const char *token,
	    const char *output_path, json_t *results);
int	store_run_finish(struct store *, const char *id, const char *token,
	    enum run_finish, int exit_code, const char *error, double delay);
int	store_sweep(struct store *, double backoff_base, double backoff_max,
	    struct sweep_counts *);
int	store_run_abandon(struct store *, const char *id, const char *token,
	    const char *error, double backoff_base, double backoff_max);
int	store_environment_abandon(struct store *, const char *id,
	    const char *token, const char *error);
int	store_release_claim(struct store *, int env, const char *token,
	    const char *error, char *id);
int	store_host_beat(struct store *, const char *name, const char *info,
	    double ttl);
json_t	*store_list_hosts(struct store *);
int	store_singleton(struct store *, const char *name, const char *holder,
	    double lease);
json_t	*store_gc_environments(struct store *, long ttl_days, int dry_run);
int	store_run_finished_before(struct store *, const char *id,
	    long ttl_days);
int	store_pending(struct store *, long *count);
int	store_queue_stats(struct store *, struct queue_stats *);
int	store_next_due(struct store *, double *seconds);
int	store_wait(struct store *, double timeout);
int	store_listens(struct store *);
/* Whether store_wait's 1 means "work is there now", not "told of some". */
int	store_wait_looks(struct store *);
void	store_wake_on(struct store *, int fd);

int	store_register(struct store *, const char *workspace,
	    const char *configuration, char *workspace_id,
	    char *configuration_id);
int	store_enqueue(struct store *, const struct enqueue_req *);
json_t	*store_list_runs(struct store *, const char *status, long limit);
int	store_run_requeue(struct store *, const char *id);
int	store_run_cancel(struct store *, const char *id);
json_t	*store_list_environments(struct store *);
int	store_environment_rebuild(struct store *, const char *id);
json_t	*store_show_run(struct store *, const char *id);

#endif
