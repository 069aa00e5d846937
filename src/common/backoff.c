/*
 * The retry delay after failed attempt n (counting from 1) is
 * min(max, base * 2^(n-1)): 5, 10, 20, ... 300 seconds with the defaults.
 * Jitter is added by the caller, so that this stays a pure function.
 *
 * While idle, a worker sleeps a little longer each time, up to a cap:
 * next = min(max, cur * 1.25 + 0.01 + jitter).
 */
#include "backoff.h"

double
backoff_delay(double base, double max, long long attempt)
{
	double d = base;
	long long i;

	if (base <= 0)
		return 0;
	if (attempt < 1)
		attempt = 1;
	for (i = 1; i < attempt && d < max; i++)
		d *= 2;
	return d < max ? d : max;
}

double
backoff_idle_next(double cur, double max, double jitter)
{
	double next = cur * 1.25 + 0.01 + jitter;

	return next < max ? next : max;
}
