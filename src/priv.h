/*
 * Giving up root, and writing the pidfile.
 */
#ifndef ADE_PRIV_H
#define ADE_PRIV_H

struct conf;

int	priv_drop(const struct conf *, int required);
int	pidfile_write(const char *);

#endif
