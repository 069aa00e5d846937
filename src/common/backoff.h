/*
 * Retry delays and the idle polling schedule.
 */
#ifndef ADE_BACKOFF_H
#define ADE_BACKOFF_H

double	backoff_delay(double base, double max, long long attempt);
double	backoff_idle_next(double cur, double max, double jitter);

#endif
