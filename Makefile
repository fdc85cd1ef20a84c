# celeriac: one non-recursive Makefile. Sources are found by convention, so adding a file needs
# no edit here:
#   common/*.c broker-adapters/*/*.c producer/client*.c  -> build/lib/libceleriac.{a,so}
#   worker/*.c                                           -> build/bin/worker
#   producer/*.c (not client*)                           -> build/bin/producer
#   services/<name>/*.c (+ services/lib/*.c), tests/services/<name>/*.c -> build/services/<name>.so, build/tests/services/<name>.so
#   tests/unit/test_*.c, tests/integration/test_*.c      -> one cmocka binary each
#   tests/fuzz/fuzz_*.c                                  -> libFuzzer targets (make fuzz) and gcc replays (make check)
#   bench/*.c                                            -> build/bench/<name>
# `make check` builds the same tree under ASan+UBSan in build/asan (BUILD=build/asan SAN=1).

BUILD ?= build
SAN ?=
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

PKGS := librabbitmq msgpack hiredis jansson sqlite3 libcrypto libssl
PKG_librabbitmq := librabbitmq-dev
PKG_msgpack := libmsgpack-dev
PKG_hiredis := libhiredis-dev
PKG_jansson := libjansson-dev
PKG_sqlite3 := libsqlite3-dev
PKG_libcrypto := libssl-dev
PKG_libssl := libssl-dev
PKG_cmocka := libcmocka-dev
PKG_libmicrohttpd := libmicrohttpd-dev

ifeq ($(filter clean format format-check help,$(MAKECMDGOALS)),)
ifeq ($(shell command -v pkg-config 2>/dev/null),)
$(error pkg-config not found: run scripts/deps.sh (or apt-get install pkg-config))
endif
pkgcheck = $(if $(shell pkg-config --exists $(1) && echo ok),,$(error library $(1) not found by pkg-config: install the Debian package $(PKG_$(1)) (scripts/deps.sh installs everything)))
$(foreach p,$(PKGS) cmocka,$(call pkgcheck,$(p)))
HAVE_MHD := $(shell pkg-config --exists libmicrohttpd && echo 1)
endif

ifeq ($(HAVE_MHD),1)
PKGS += libmicrohttpd
DEFS_MHD := -DCEL_HAVE_MHD=1
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wcast-align -Wwrite-strings -Wno-unused-parameter \
        -Wno-missing-field-initializers
OPT ?= -O2 -g
SAN_ON := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SANFLAGS := $(if $(SAN),$(SAN_ON))
CPPFLAGS_ALL := -Iinclude -I. -D_GNU_SOURCE $(DEFS_MHD) -DCEL_BUILD_DIR='"$(abspath $(BUILD))"'
CFLAGS_ALL := -std=c11 $(WARN) $(OPT) $(SANFLAGS) -fPIC -MMD -MP $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(SANFLAGS) $(LDFLAGS)
LIBS_ALL := $(PKG_LIBS) -ldl -lm -lpthread

LIB_SRCS := $(wildcard common/*.c) $(wildcard broker-adapters/*/*.c) $(wildcard producer/client*.c)
WORKER_SRCS := $(wildcard worker/*.c)
PRODUCER_SRCS := $(filter-out producer/client%,$(wildcard producer/*.c))
SERVICE_NAMES := $(filter-out lib,$(notdir $(patsubst %/,%,$(dir $(wildcard services/*/*.c)))))
SVCLIB_OBJS = $(call obj,$(wildcard services/lib/*.c))
TEST_SERVICE_NAMES := $(notdir $(patsubst %/,%,$(dir $(wildcard tests/services/*/*.c))))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
BENCH_SRCS := $(wildcard bench/*.c)
TESTLIB_SRCS := $(wildcard tests/lib/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_A := $(BUILD)/lib/libceleriac.a
LIB_SO := $(BUILD)/lib/libceleriac.so
WORKER := $(BUILD)/bin/worker
PRODUCER := $(BUILD)/bin/producer
SERVICES := $(foreach s,$(SERVICE_NAMES),$(BUILD)/services/$(s).so)
TEST_SERVICES := $(foreach s,$(TEST_SERVICE_NAMES),$(BUILD)/tests/services/$(s).so)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
INTEG_BINS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRCS))
REPLAY_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/tests/fuzz/%-replay,$(FUZZ_SRCS))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
TESTLIB_OBJS := $(call obj,$(TESTLIB_SRCS))
PC := $(BUILD)/lib/pkgconfig/celeriac.pc

.SECONDEXPANSION:
.SECONDARY:

.PHONY: all test test-cluster unit check fuzz bench demo install clean format format-check help stack-up stack-down
.DEFAULT_GOAL := all

all: $(LIB_A) $(LIB_SO) $(PC) $(if $(WORKER_SRCS),$(WORKER)) $(if $(PRODUCER_SRCS),$(PRODUCER)) $(SERVICES) $(TEST_SERVICES) \
     $(UNIT_BINS) $(INTEG_BINS) $(REPLAY_BINS) $(BENCH_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

$(LIB_A): $(call obj,$(LIB_SRCS))
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(call obj,$(LIB_SRCS))
	@mkdir -p $(@D)
	$(CC) -shared -Wl,-soname,libceleriac.so.0 $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(PC): Makefile
	@mkdir -p $(@D)
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: celeriac\nDescription: Celery-compatible background jobs in C\nVersion: 0.1.0\nRequires: msgpack\nRequires.private: librabbitmq hiredis jansson libssl libcrypto\nCflags: -I$${includedir} -I$${includedir}/celeriac\nLibs: -L$${libdir} -lceleriac\nLibs.private: -ldl -lm -lpthread\n' '$(PREFIX)' > $@

$(WORKER): $(call obj,$(WORKER_SRCS)) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -rdynamic -o $@ $^ $(LIBS_ALL)

$(PRODUCER): $(call obj,$(PRODUCER_SRCS)) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

# A service links against nothing of the worker: only its own libraries (sqlite3) and the
# shared helpers of services/lib, linked statically into each .so.
$(BUILD)/services/%.so: $$(call obj,$$(wildcard services/$$*/*.c)) $$(SVCLIB_OBJS)
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $^ -lsqlite3

$(BUILD)/tests/services/%.so: $$(call obj,$$(wildcard tests/services/$$*/*.c))
	@mkdir -p $(@D)
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $^ -lsqlite3

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TESTLIB_OBJS) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL) $(CMOCKA_LIBS)

$(BUILD)/tests/integration/%: $(BUILD)/obj/tests/integration/%.o $(TESTLIB_OBJS) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL) $(CMOCKA_LIBS)

$(BUILD)/tests/fuzz/%-replay: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/replay/main.o $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/obj/tests/fuzz/replay/main.o: tests/fuzz/replay.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)


# ---- running things ----

unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS)

test: all
	scripts/test.sh

# a private three-node RabbitMQ cluster (scripts/cluster.sh) and the failover tests (~1.5 min)
test-cluster: all
	/usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/cluster

check:
	$(MAKE) BUILD=build/asan SAN=1 OPT='-O1 -g' all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  scripts/run-unit.sh $(patsubst $(BUILD)/%,build/asan/%,$(UNIT_BINS))
	ASAN_OPTIONS=detect_leaks=1 scripts/fuzz-replay.sh build/asan

FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRCS))
fuzz: $(FUZZ_BINS)
build/fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p $(@D)
	clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS_ALL:-DCEL_BUILD_DIR=%=) \
	  $(PKG_CFLAGS) -o $@ $< $(LIB_SRCS) $(LIBS_ALL)

bench: all
	bench/run.sh

demo:
	scripts/demo.sh

stack-up:
	scripts/stack.sh up
stack-down:
	scripts/stack.sh down

# install: binaries, the library (static, shared with its soname links), the public headers with
# the common/ headers they include, pkg-config file, services, systemd unit and an env example.
SOVER := 0.1.0
LIBDIR_I := $(DESTDIR)$(PREFIX)/lib
INCDIR_I := $(DESTDIR)$(PREFIX)/include/celeriac
install: $(LIB_A) $(LIB_SO) $(PC) $(WORKER) $(PRODUCER) $(SERVICES)
	install -d $(DESTDIR)$(PREFIX)/bin $(LIBDIR_I)/pkgconfig $(INCDIR_I)/common \
	  $(LIBDIR_I)/celeriac/services $(LIBDIR_I)/systemd/system $(DESTDIR)$(PREFIX)/share/celeriac
	install -m 755 $(WORKER) $(PRODUCER) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIB_A) $(LIBDIR_I)/
	install -m 755 $(LIB_SO) $(LIBDIR_I)/libceleriac.so.$(SOVER)
	ln -sf libceleriac.so.$(SOVER) $(LIBDIR_I)/libceleriac.so.0
	ln -sf libceleriac.so.0 $(LIBDIR_I)/libceleriac.so
	install -m 644 include/celeriac/*.h $(INCDIR_I)/
	install -m 644 common/arena.h common/buf.h common/message.h common/value.h $(INCDIR_I)/common/
	sed 's|^prefix=.*|prefix=$(PREFIX)|' $(PC) > $(LIBDIR_I)/pkgconfig/celeriac.pc
	install -m 755 $(SERVICES) $(LIBDIR_I)/celeriac/services/
	sed 's|@PREFIX@|$(PREFIX)|g' packaging/celeriac-worker@.service > '$(LIBDIR_I)/systemd/system/celeriac-worker@.service'
	install -m 644 packaging/worker.env.example $(DESTDIR)$(PREFIX)/share/celeriac/

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

help:
	@sed -n 's/^# \{0,1\}//p' Makefile | head -12

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
