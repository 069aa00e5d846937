# ade-superd — hand-written Makefile.  ./configure writes config.mk, which
# is included here; when it is missing, make runs autoconf and configure
# with default options (CI runs ./configure --enable-werror itself).

-include config.mk

ifeq ($(wildcard config.mk),)
all check sanitize-check install demo:
	@if command -v autoconf >/dev/null 2>&1; then \
		echo "config.mk is missing: running autoconf && ./configure"; \
		autoconf && ./configure && $(MAKE) $@; \
	else \
		echo "config.mk is missing; run: autoconf && ./configure"; \
		echo "(autoconf comes from Debian's autoconf package)"; \
		exit 1; \
	fi
else

# Where the configuration and the state live.  Autoconf's defaults are
# $(prefix)/etc and $(prefix)/var; a system install, prefix=/usr given to
# configure or to make, puts them in /etc and /var instead, as Debian
# packages do.  sysconfdir and localstatedir given explicitly win.
ifeq ($(prefix),/usr)
ifeq ($(value sysconfdir),$${prefix}/etc)
sysconfdir = /etc
endif
ifeq ($(value localstatedir),$${prefix}/var)
localstatedir = /var
endif
endif

B = build
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN_CFLAGS) $(SAN_FLAGS) $(PQ_CFLAGS) \
	-DADE_SYSCONFDIR='"$(sysconfdir)"' \
	-DADE_LOCALSTATEDIR='"$(localstatedir)"' \
	-DADE_PYTHON='"$(PYTHON)"' -DADE_VERSION='"$(PACKAGE_VERSION)"'
ALL_LDFLAGS = $(LDFLAGS) $(SAN_FLAGS)

# src/ has one directory per part: common (configuration, paths, logging
# and helpers every part uses), store (the database operations and one
# backend per database), worker (claiming and running jobs), super (the
# supervisor and its maintenance and HTTP children), ctl (ade-ctl).
SRC_DIRS = common store worker super ctl
LIB_SRCS = common/arch.c common/backoff.c common/conf.c common/digest.c \
	common/log.c common/paths.c common/priv.c common/proctitle.c \
	common/util.c \
	store/store.c store/store_mssql.c store/store_pgsql.c \
	store/store_sqlite.c store/tds.c \
	worker/evlog.c worker/job_env.c worker/job_run.c worker/proc.c \
	worker/results.c worker/rundir.c worker/sandbox.c worker/worker.c \
	super/control.c super/gc.c super/http.c super/http_ui.c \
	super/maint.c super/scoreboard.c super/super.c
LIB_OBJS = $(LIB_SRCS:%.c=$(B)/%.o)
HDRS = $(wildcard src/*/*.h)
INCLUDES = $(SRC_DIRS:%=-Isrc/%)

UNIT_TESTS = test_arch test_backoff test_conf test_digest test_mssql \
	test_paths test_proc test_results
UNIT_BINS = $(UNIT_TESTS:%=$(B)/tests/%)

PYTEST = $(PYTHON) -m pytest

all: $(B)/ade-superd $(B)/ade-ctl

$(B)/%.o: src/%.c $(HDRS) config.mk
	@mkdir -p $(@D)
	@echo "CC $<"
	@$(CC) $(ALL_CFLAGS) $(CPPFLAGS) $(INCLUDES) -c -o $@ $<

# The programs have the configuration file's path and the data_dir default
# compiled in.  $(B)/installdirs holds the paths of the last build and is
# rewritten only when they change, so that "make install prefix=/usr"
# after a plain make compiles again, and copies again, what names them.
PATH_OBJS = $(patsubst src/%.c,$(B)/%.o,$(shell grep -l \
	-e ADE_SYSCONFDIR -e ADE_LOCALSTATEDIR src/*/*.c))
$(PATH_OBJS): $(B)/installdirs

$(B)/installdirs: FORCE
	@mkdir -p $(B)
	@printf '%s\n' '$(sysconfdir)' '$(localstatedir)' '$(sbindir)' > $@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv -f $@.new $@; fi

$(B)/libade.a: $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

$(B)/ade-superd: $(B)/super/superd.o $(B)/libade.a
	$(CC) $(ALL_LDFLAGS) -o $@ $(B)/super/superd.o $(B)/libade.a $(LIBS)

$(B)/ade-ctl: $(B)/ctl/ctl.o $(B)/libade.a
	$(CC) $(ALL_LDFLAGS) -o $@ $(B)/ctl/ctl.o $(B)/libade.a $(LIBS)

$(B)/tests/%: tests/unit/%.c tests/unit/unit.h $(B)/libade.a $(HDRS)
	@mkdir -p $(B)/tests
	$(CC) $(ALL_CFLAGS) $(CPPFLAGS) $(INCLUDES) -Itests/unit \
		-DTEST_DATA='"$(CURDIR)/tests/data"' -o $@ $< $(B)/libade.a \
		$(LIBS) -lcmocka

$(B)/noop-engine: tests/bench/noop_engine.c
	@mkdir -p $(B)
	$(CC) $(ALL_CFLAGS) -o $@ $<

bench: all $(B)/noop-engine
	ADE_BUILD_DIR=$(CURDIR)/$(B) $(PYTHON) tests/bench/bench.py $(BENCH_ARGS)

check: all unit-check docs-check integration-check

docs-check: all
	sh tests/check-docs.sh $(B)
	sh tests/check-layout.sh

unit-check: $(UNIT_BINS)
	@if [ "$(HAVE_CMOCKA)" != yes ]; then \
		echo "cmocka is missing: install libcmocka-dev"; exit 1; fi
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration-check: all
	ADE_BUILD_DIR=$(CURDIR)/$(B) ADE_PYTHON=$(PYTHON) \
		$(PYTEST) -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

# A second build with AddressSanitizer and UndefinedBehaviorSanitizer in
# $(SAN_B), and the unit tests and the integration tests of the supervisor,
# its failure handling, the results and the run directories made ahead
# run against it.  Any report stops
# the process that made it, and the integration harness fails a test whose
# processes printed one.  The SQL Server cases are left out: the run must
# stay short enough for CI.
SAN_B = build-san
SAN_CFLAGS = -fsanitize=address,undefined,float-cast-overflow \
	-fno-omit-frame-pointer
SAN_ENV = ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:log_path=stderr \
	UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=stderr
SAN_TESTS = tests/integration/test_supervisor.py \
	tests/integration/test_superd_robustness.py \
	tests/integration/test_superd_failures.py \
	tests/integration/test_results_fit.py \
	tests/integration/test_run_dirs.py \
	tests/integration/test_http.py tests/integration/test_dashboard.py
NO_MSSQL = unset ADE_TEST_MSSQL_HOST ADE_TEST_MSSQL_PORT ADE_TEST_MSSQL_USER \
	ADE_TEST_MSSQL_PASSWORD ADE_TEST_MSSQL_DATABASE

sanitize-check:
	$(NO_MSSQL); $(SAN_ENV) $(MAKE) B=$(SAN_B) SAN_FLAGS='$(SAN_CFLAGS)' \
		all unit-check
	$(NO_MSSQL); $(SAN_ENV) ADE_BUILD_DIR=$(CURDIR)/$(SAN_B) \
		ADE_PYTHON=$(PYTHON) $(PYTEST) -q -p no:cacheprovider \
		$(SAN_TESTS) $(PYTEST_ARGS)

demo: all
	PYTHON=$(PYTHON) sh contrib/demo.sh

# The sample configuration, the manual pages and the service files name
# the paths of a system install (/etc/ade, /var/lib/ade, /usr/sbin); the
# copies in $(B)/install, which make install installs, name the paths of
# this build.
SUBST_FILES = etc/worker.conf man/ade-worker.conf.5 man/ade-superd.8 \
	man/ade-ctl.8 contrib/init.d/ade-superd \
	contrib/systemd/ade-superd.service
SUBST_PATHS = sed -e 's|/etc/ade/|$(sysconfdir)/ade/|g' \
	-e 's|/etc/default/ade-superd|$(sysconfdir)/default/ade-superd|g' \
	-e 's|/var/lib/ade|$(localstatedir)/lib/ade|g' \
	-e 's|LOCALSTATEDIR/lib/ade ([^)]*)|$(localstatedir)/lib/ade|g' \
	-e 's|/usr/sbin/ade-superd|$(sbindir)/ade-superd|g'

$(B)/install/%: % $(B)/installdirs
	@mkdir -p $(@D)
	$(SUBST_PATHS) $< > $@

I = $(B)/install
ETC_D = $(DESTDIR)$(sysconfdir)
MAN_D = $(DESTDIR)$(mandir)
UNIT_D = $(DESTDIR)$(prefix)/lib/systemd/system

install: all $(SUBST_FILES:%=$(I)/%)
	install -d $(DESTDIR)$(sbindir) $(DESTDIR)$(bindir) $(ETC_D)/ade \
		$(MAN_D)/man5 $(MAN_D)/man8 $(ETC_D)/init.d \
		$(ETC_D)/logrotate.d $(UNIT_D)
	install -m 0755 $(B)/ade-superd $(DESTDIR)$(sbindir)/ade-superd
	install -m 0755 $(B)/ade-ctl $(DESTDIR)$(bindir)/ade-ctl
	install -m 0640 $(I)/etc/worker.conf $(ETC_D)/ade/worker.conf.sample
	install -m 0644 $(I)/man/ade-worker.conf.5 $(MAN_D)/man5/
	install -m 0644 $(I)/man/ade-superd.8 $(I)/man/ade-ctl.8 \
		$(MAN_D)/man8/
	install -m 0755 $(I)/contrib/init.d/ade-superd $(ETC_D)/init.d/
	install -m 0644 $(I)/contrib/systemd/ade-superd.service $(UNIT_D)/
	install -m 0644 contrib/logrotate/ade-superd $(ETC_D)/logrotate.d/

clean:
	rm -rf $(B) $(SAN_B)

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache demo

FORCE:

.PHONY: FORCE bench all check sanitize-check unit-check docs-check \
	integration-check demo install clean distclean
endif
