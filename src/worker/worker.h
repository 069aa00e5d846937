/*
 * A worker process: its own database connection and the synchronous loop
 * claim, build or run, finish.  The jobs (environment builds and runs)
 * live in job_env.c and job_run.c.
 */
#ifndef ADE_WORKER_H
#define ADE_WORKER_H

#include <signal.h>

struct conf;
struct store;
struct env_claim;
struct run_claim;

/* Exit codes of a worker, a contract with whoever started it. */
#define WORKER_EXIT_OK		0
#define WORKER_EXIT_ERROR	1
#define WORKER_EXIT_RECYCLE	75	/* EX_TEMPFAIL: replace me now */
#define WORKER_EXIT_CONFIG	78	/* EX_CONFIG: do not restart */

struct worker {
	const struct conf	*conf;
	struct store		*store;
	char			 id[160];
	int			 exit_when_idle;
	long			 jobs_done;
	long			 trimmed_at;	/* jobs_done at the last trim */
	int			 env_hint;	/* an environment was queued */
	int			 woken;		/* told of new work: runs first */
	int			 spare;		/* a run directory made ahead */
	double			 next_env_look;
};

/* Set by signal handlers; looked at by the loop and by running jobs. */
extern volatile sig_atomic_t worker_stop;	/* finish the job, then exit */
extern volatile sig_atomic_t worker_quit;	/* stop the job now */

int	worker_main(const struct conf *, int exit_when_idle);
void	worker_token(const struct worker *, char *, size_t);
void	worker_pause(double, volatile sig_atomic_t *);

int	job_hydrate_environment(struct worker *, const struct env_claim *,
	    const char *, const char *, const char *, char *, size_t);
void	job_build_environment(struct worker *, const struct env_claim *,
	    const char *token);
void	job_execute_run(struct worker *, struct run_claim *,
	    const char *token);

#endif
