/*
 * A run directory made ahead of the run: see rundir.c.
 */
#ifndef ADE_RUNDIR_H
#define ADE_RUNDIR_H

struct worker;

/* The parts of a run directory a run may use, besides logs/. */
#define RUNDIR_INPUT	0x1
#define RUNDIR_OUTPUT	0x2
#define RUNDIR_TMP	0x4

void	rundir_sweep(struct worker *);
void	rundir_make(struct worker *);
int	rundir_take(struct worker *, const char *run_dir);
void	rundir_trim(const char *run_dir, int used);
void	rundir_drop(struct worker *);

#endif
