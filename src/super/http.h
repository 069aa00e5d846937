/*
 * The HTTP endpoint: health and readiness probes and Prometheus metrics,
 * served by a child of the supervisor (http.c).
 */
#ifndef ADE_HTTP_H
#define ADE_HTTP_H

#include <sys/types.h>

struct conf;

int	http_main(const struct conf *, pid_t supervisor);

#endif
