/*
 * Confinement of engines and build steps with Landlock: what each child
 * may read and write on the file system, decided by the worker and
 * entered by the child just before exec.
 */
#ifndef ADE_SANDBOX_H
#define ADE_SANDBOX_H

#include <stddef.h>

struct conf;

#define SANDBOX_READ	0	/* read files, list and execute */
#define SANDBOX_WRITE	1	/* also create, change and remove */

struct sandbox {
	int	fd;		/* Landlock ruleset, or -1: unconfined */
};

int		 sandbox_abi(void);
int		 sandbox_check(const struct conf *, char *, size_t);
int		 sandbox_setup(const struct conf *);
const char	*sandbox_describe(void);
void		 sandbox_prepare(void);
int		 sandbox_begin(struct sandbox *);
int		 sandbox_allow(struct sandbox *, const char *, int);
void		 sandbox_end(struct sandbox *);
int		 sandbox_enter(int);

#endif
