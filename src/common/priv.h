/*
 * Giving up root, and writing the pidfile.
 */
#ifndef ADE_PRIV_H
#define ADE_PRIV_H

#include <sys/types.h>

struct conf;

int	priv_drop(const struct conf *, int required);
int	pidfile_write(const char *);

int	priv_engine_on(void);
void	priv_engine_enter(void);
void	priv_engine_leave(void);
int	priv_engine_become(void);
int	priv_engine_share(const char *, mode_t);
int	priv_engine_unshare(const char *);
void	priv_engine_reach(const char *, const char *);
int	priv_engine_owns(const char *);
void	priv_engine_settle(const char *);
void	priv_engine_lend(const char *, const char *);

#endif
