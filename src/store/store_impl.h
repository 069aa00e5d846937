/*
 * What a store backend provides: a table of operations.  Only store.c
 * and the backend files include this header.
 */
#ifndef ADE_STORE_IMPL_H
#define ADE_STORE_IMPL_H

#include <stdarg.h>

#include "store.h"

/*
 * The statements of the operations store.c carries out itself, in the
 * backend's dialect.  Parameters are given in the order each names;
 * every id is passed in its canonical lower-case form.
 */
struct store_sql {
	/* name, holder, expires_at, state ("up" or "gone") of host rows */
	const char	*list_hosts;
	/* (status or NULL for all, limit): the newest runs first */
	const char	*list_runs;
	const char	*list_environments;
	/* (id): the run's row with the names of NAMES_OF_RUN */
	const char	*show_run;
	/* (id): a run's result rows, each with every column it has */
	const char	*show_metrics;
	const char	*show_fields;
	const char	*show_columns;
	/* (id, token, lease seconds): renew a held claim's lease */
	const char	*heartbeat_run;
	const char	*heartbeat_environment;
	/* (id): the environment's last use is now */
	const char	*environment_touch;
	/* (id, error): a ready environment back to the queue */
	const char	*environment_requeue;
	/* (id): an operator's requeue, cancel and rebuild */
	const char	*run_requeue;
	const char	*run_cancel;
	const char	*environment_rebuild;
	/* (backoff base, max, id, error, token): a dead worker's run */
	const char	*run_abandon;
	/* (id, token, error) */
	const char	*environment_abandon;
	/* (token): the id of the run, or environment, a claim holds */
	const char	*run_claimed_with;
	const char	*environment_claimed_with;
	/* (id, days): "v", whether it finished more than days ago */
	const char	*run_finished_before;
	/*
	 * Looks at the queue; a stop may cut them short.  pending: "n",
	 * the runs and builds queued or under way; queue_stats:
	 * QUEUE_STATS's rows; next_due: "ms" until the earliest queued
	 * run is due, NULL when none is queued.
	 */
	const char	*pending;
	const char	*queue_stats;
	const char	*next_due;
	/* (name, info, ttl seconds): a host's row, whatever it held */
	const char	*host_beat;
	/* (id, token, python, python version, engine version) */
	const char	*environment_ready;
	/* (id): stored_uri and original_filename of a document */
	const char	*document;
	/* (id, token, delay seconds, error): a run back to the queue */
	const char	*run_retry;
	/* the same, without using up the attempt */
	const char	*run_release;
	/* (id, token, error, exit code) */
	const char	*run_fail;
	/*
	 * (days): id, workspace_id, configuration_id, deps_digest of the
	 * environments no run needs that were last used days ago or more;
	 * (days, id): deletes one of them if it still is one.
	 */
	const char	*gc_candidates;
	const char	*gc_delete;
	/*
	 * (backoff base, max): runs whose lease expired back to the queue,
	 * or failed when their attempts are used up; rows of the status
	 * each got, with how many in "n" when a row stands for several.
	 * Then (): environments whose build's lease expired.
	 */
	const char	*sweep_runs;
	const char	*sweep_environments;
	/*
	 * (name, holder, lease seconds): takes or renews a lease row of
	 * worker_leases unless another holder's is still running; changes
	 * one row when it is the holder's.  A unique key's failure there
	 * means another took it first.
	 */
	const char	*singleton;
	/*
	 * (id, token, error): a build's failure, guarded by its claim (on
	 * PostgreSQL it divides by zero when the claim is lost); then
	 * (backoff base, max, id, error): one attempt charged to every due
	 * run that waited for it.
	 */
	const char	*environment_failed;
	const char	*charge_runs;
	/*
	 * (): an environment row queued for each build that due runs need
	 * and none has; the failed ones such runs wait for queued again.
	 * A stop may cut them short.
	 */
	const char	*ensure_insert;
	const char	*ensure_requeue;
	/*
	 * What ade-ctl enqueue writes, in one transaction.  The document
	 * (id, workspace id, original filename, content type, byte size,
	 * sha256, stored uri, run id); the configuration's last use (id,
	 * content digest); the run (id, configuration id, workspace id,
	 * document id, input sheet names, engine spec, deps digest, run
	 * options, max attempts).
	 */
	const char	*enqueue_document;
	const char	*enqueue_configuration;
	const char	*enqueue_run;
	/*
	 * (id, token, output path): a run's success, keeping its result
	 * rows or replacing them.  Replacing clears the rows of an earlier
	 * success with clear_results (id) run after it, unless the claim of
	 * the run's new attempt already did (PostgreSQL).
	 */
	const char	*run_succeeded;
	const char	*run_succeeded_replacing;
	const char	*clear_results[3];
};

/* One statement of a transaction and its values, a JSON array. */
struct store_stmt {
	const char	*sql;
	json_t		*values;
	int		 owned;		/* sql is freed with it */
};

struct store_ops {
	const char *name;
	/*
	 * The driver: runs one statement with the values fmt describes (s
	 * a string, NULL for NULL; i a long long; d a double) and returns
	 * its rows as JSON objects keyed by column, times as ISO 8601 text
	 * in UTC; NULL on failure, the reason in the store's err.
	 */
	json_t	*(*rows)(struct store *, const char *what, const char *sql,
		    const char *fmt, va_list);
	/*
	 * The same for a statement that changes rows: how many it changed
	 * (a SQL Server batch ends with SELECT @@ROWCOUNT), or -1 or
	 * STORE_DEAD.
	 */
	int	(*count)(struct store *, const char *what, const char *sql,
		    const char *fmt, va_list);
	/*
	 * Runs the statements, each with its values, as one transaction
	 * in as few round trips as the backend can.  The first one guards
	 * the others: when it changes no row, nothing is changed and 0 is
	 * returned.  (A PostgreSQL pipeline cannot look at a count before
	 * the rest runs, so there the statement fails with a division by
	 * zero instead.)  1 when all of it is written, with the rows the
	 * last statement changed in last (if not NULL); -1 or STORE_DEAD.
	 */
	int	(*guarded)(struct store *, const char *what,
		    const struct store_stmt *, size_t n, long *last);
	/*
	 * When not NULL: guarded (without last), then in the same
	 * transaction and round trip claim_run's claim (token, lease).  On
	 * 1, *looked tells whether the claim was made (a backend may leave
	 * it out, when the statements do not fit one round trip), and *row
	 * is the run it claimed, NULL when there was none.  When the claim
	 * fails, nothing is written.
	 */
	int	(*guarded_claim)(struct store *, const char *what,
		    const struct store_stmt *, size_t n, const char *token,
		    double lease, json_t **row, int *looked);
	/*
	 * How a statement names its nth parameter (param and n), and the
	 * first when it is a run id.
	 */
	const char *param;
	const char *run_id_param;
	/*
	 * When not NULL: the INSERT of a result table's rows given as one
	 * JSON array (param 2) with the run id (param 1), whatever the
	 * number of rows.  Its text does not change from run to run, so
	 * that the server can keep its plan.
	 */
	void	(*insert_json_sql)(struct buf *, const char *table,
		    const char *const *cols);
	const struct store_sql *sql;
	void	(*close)(struct store *);
	int	(*init_schema)(struct store *);
	/* 1 with the names in the buf, 0 when there is no such table */
	int	(*table_columns)(struct store *, const char *, struct buf *);
	/*
	 * The claims: 1 with the claimed row (token, lease seconds) as a
	 * JSON object keyed as CLAIMED_ENVIRONMENT and CLAIMED_RUN name,
	 * which store.c reads; 0 when there was nothing to claim.
	 */
	int	(*claim_environment)(struct store *, const char *, double,
		    json_t **);
	int	(*claim_run)(struct store *, const char *, double, json_t **);
	int	(*wait)(struct store *, double);	/* NULL: sleep */
	/*
	 * Whether wait's 1 means "there is work now" (a look at the tables)
	 * rather than "something happened" (a notification): a look keeps
	 * seeing work that this host cannot claim yet.
	 */
	int	  wait_looks;
	int	(*register_names)(struct store *, const char *, const char *,
		    char *, char *);
};

/* What the last failure of a driver call means. */
enum store_fail {
	STORE_FAIL_OTHER,	/* an error of the statement: report it */
	STORE_FAIL_DEAD,	/* the connection is gone */
	STORE_FAIL_RETRY,	/* a deadlock, a lock or busy timeout */
	STORE_FAIL_CONSTRAINT	/* unique key, NOT NULL, CHECK, foreign key */
};

struct store {
	const struct store_ops	*ops;
	char			 err[1024];
	int			 dead;	/* the last error lost the connection */
	enum store_fail		 fail;	/* and what it means */
	int			 wake_fd;	/* readable: end waits now */
	/* The result columns the tables have (store_result_columns). */
	const char *const	*cols[3];
	int			 probed;
	int			 may_stop;	/* a stop may cut this call */
	size_t			 max_params;	/* of one statement */
	/* The next run, claimed with a success (store_claim_ahead). */
	struct {
		int		 state;		/* AHEAD_* of store.c */
		int		 off;		/* it failed: not again */
		char		 token[256];
		double		 lease;
		json_t		*row;		/* the run, NULL for none */
	} ahead;
};

/*
 * The INSERT of nrows rows of cols into a result table: the run id
 * (run_id) first, shared by every row, then the values of the rows
 * (param 2 onwards).
 */
void	store_insert_sql(struct buf *, const char *param, const char *run_id,
	    const char *table, const char *const *cols, size_t nrows);
/* How many rows of ncols values and a run id fit max_params (1 at least). */
size_t	store_rows_per_insert(size_t max_params, size_t ncols);
/*
 * Appends sql with its parameters numbered from first on, so that it can
 * follow others in one statement or batch: param ("$", "@p") and 1
 * become param and first.  The statement writes param only in front of
 * its parameters' numbers.
 */
void	store_renumber(struct buf *, const char *sql, const char *param,
	    size_t first);

/*
 * The columns to write of run_metrics (0), run_fields (1) and
 * run_table_columns (2): those of results.c the tables have.
 */
const char *const *store_result_columns(struct store *, int which);

/* Sleeps up to secs, or until the wake descriptor is readable. */
void		 store_pause(struct store *, double secs);

/* A backend's open says so when its failure is a configuration error. */
void		 store_open_permanent(void);

struct store	*store_sqlite_open(const struct conf *, struct buf *, int create);
struct store	*store_pgsql_open(const struct conf *, struct buf *);
struct store	*store_mssql_open(const struct conf *, struct buf *);

/*
 * The names an operator knows a run by, for listings: the same
 * correlated subqueries are valid in the three dialects.
 */
#define NAMES_OF_RUN							\
	"  (SELECT slug FROM workspaces w WHERE w.id = runs.workspace_id)" \
	"  AS workspace_slug,"						\
	"  (SELECT display_name FROM configurations c"			\
	"   WHERE c.id = runs.configuration_id) AS configuration_name,"	\
	"  (SELECT original_filename FROM documents d"			\
	"   WHERE d.id = runs.input_document_id) AS document_name"

/* An environment's row (e) and a run's (r) are for the same build. */
#define ENV_KEY(e, r)							\
	e ".workspace_id = " r ".workspace_id AND "			\
	e ".configuration_id = " r ".configuration_id AND "		\
	e ".engine_spec = " r ".engine_spec AND "			\
	e ".deps_digest = " r ".deps_digest"

/*
 * A running run whose claim ended without a result (a lease that
 * expired, a worker that died): failed when its attempts are used up,
 * else queued again at retry_at, after the backoff of the attempt it
 * just lost.  now and retry_at are written in the backend's dialect.
 */
#define GIVE_UP_OR_RETRY(now, retry_at)					\
	"  status = CASE WHEN attempt_count >= max_attempts"		\
	"    THEN 'failed' ELSE 'queued' END,"				\
	"  completed_at = CASE WHEN attempt_count >= max_attempts"	\
	"    THEN " now " ELSE NULL END,"				\
	"  available_at = CASE WHEN attempt_count >= max_attempts"	\
	"    THEN available_at ELSE " retry_at " END"

/*
 * The runs table counted by status in one pass: the same statement in
 * the three dialects but for how a time's age in milliseconds is
 * written.
 */
#define QUEUE_STATS(age)						\
	"SELECT status, COUNT(*) AS n,"					\
	"  SUM(CASE WHEN status = 'queued' AND " age " >= 0"		\
	"   AND attempt_count < max_attempts THEN 1 ELSE 0 END) AS due,"	\
	"  MAX(CASE WHEN status = 'queued' AND " age " >= 0"		\
	"   AND attempt_count < max_attempts THEN " age " END)"		\
	"  AS oldest_ms FROM runs GROUP BY status"

/*
 * The columns of a claimed environment's row and of a claimed run's
 * row, as its claim answers them.  waited_ms is how long the run was
 * due; doc_found whether its document has a row, whose stored_uri and
 * original_filename come as doc_stored_uri and doc_original_filename.
 * A backend that does not read the document leaves these three out.
 */
#define CLAIMED_ENVIRONMENT	"id, workspace_id, configuration_id, "	\
	"engine_spec, deps_digest"
#define CLAIMED_RUN	"id, workspace_id, configuration_id, "		\
	"input_document_id, engine_spec, deps_digest, started_at, "	\
	"attempt_count, max_attempts, run_options, input_sheet_names, "	\
	"env_id, env_python, waited_ms, doc_found, doc_stored_uri, "	\
	"doc_original_filename"

#endif
