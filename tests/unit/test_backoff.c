/*
 * Tests the retry delay schedule (backoff_delay, reference section 3.7:
 * min(max, base * 2^(n-1))) and the idle polling schedule
 * (backoff_idle_next, reference section 7: min(max, cur * 1.25 + 0.01 +
 * jitter)).
 */
#include "unit.h"

#include "backoff.h"

#define EPS	1e-9

/* With the defaults 5 and 300 the delays are 5, 10, 20 ... 300, 300. */
static void
test_delay_default_schedule(void **state)
{
	static const double want[] = {
		5, 10, 20, 40, 80, 160, 300, 300, 300, 300
	};
	long long n;

	(void)state;
	for (n = 1; n <= 10; n++)
		assert_float_equal(backoff_delay(5, 300, n), want[n - 1], EPS);
}

/* Attempt numbers below 1 count as the first attempt. */
static void
test_delay_attempt_below_one(void **state)
{
	(void)state;
	assert_float_equal(backoff_delay(5, 300, 0), 5, EPS);
	assert_float_equal(backoff_delay(5, 300, -1), 5, EPS);
	assert_float_equal(backoff_delay(5, 300, -1000000), 5, EPS);
	assert_float_equal(backoff_delay(7, 300, 0), 7, EPS);
}

/* A base larger than the maximum is cut to the maximum at once. */
static void
test_delay_base_above_max(void **state)
{
	(void)state;
	assert_float_equal(backoff_delay(500, 300, 1), 300, EPS);
	assert_float_equal(backoff_delay(500, 300, 2), 300, EPS);
	assert_float_equal(backoff_delay(500, 300, 0), 300, EPS);
}

/* The cap is applied exactly even when doubling overshoots it. */
static void
test_delay_other_values(void **state)
{
	(void)state;
	assert_float_equal(backoff_delay(3, 100, 1), 3, EPS);
	assert_float_equal(backoff_delay(3, 100, 5), 48, EPS);
	assert_float_equal(backoff_delay(3, 100, 6), 96, EPS);
	assert_float_equal(backoff_delay(3, 100, 7), 100, EPS);
	assert_float_equal(backoff_delay(0.5, 1000, 4), 4, EPS);
	assert_float_equal(backoff_delay(5, 5, 3), 5, EPS);
	/* A huge attempt number neither overflows nor loops for long. */
	assert_float_equal(backoff_delay(5, 300, 1LL << 62), 300, EPS);
}

/* Idle sleeps grow by 25 % plus 10 ms plus the jitter. */
static void
test_idle_growth(void **state)
{
	double cur = 0.5;

	(void)state;
	cur = backoff_idle_next(cur, 2, 0);
	assert_float_equal(cur, 0.635, EPS);
	cur = backoff_idle_next(cur, 2, 0);
	assert_float_equal(cur, 0.80375, EPS);
	assert_float_equal(backoff_idle_next(1.0, 2, 0.05), 1.31, EPS);
	assert_float_equal(backoff_idle_next(0, 2, 0), 0.01, EPS);
}

/* Idle sleeps stop growing at the maximum and stay there. */
static void
test_idle_cap(void **state)
{
	double cur = 0.5;
	int i;

	(void)state;
	for (i = 0; i < 100; i++) {
		double next = backoff_idle_next(cur, 2, 0.05);

		assert_true(next >= cur);
		assert_true(next <= 2);
		cur = next;
	}
	assert_float_equal(cur, 2, EPS);
	assert_float_equal(backoff_idle_next(1.9, 2, 0), 2, EPS);
	assert_float_equal(backoff_idle_next(2, 2, 0), 2, EPS);
	assert_float_equal(backoff_idle_next(10, 2, 0), 2, EPS);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_delay_default_schedule),
		cmocka_unit_test(test_delay_attempt_below_one),
		cmocka_unit_test(test_delay_base_above_max),
		cmocka_unit_test(test_delay_other_values),
		cmocka_unit_test(test_idle_growth),
		cmocka_unit_test(test_idle_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
