# The two commands: `make demo` and `make test`. Both work on a machine with
# only rustup and cargo: `setup` installs what else is needed.

CARGO ?= cargo
TARGET := wasm32-wasip2

.PHONY: setup setup-rust setup-chromium setup-nats demo install test lint lint-k8s bench bench-injection fuzz clean-cache

## Install the guest target (and the lint tools), componentize-py and the
## MCP SDK (pinned, in target/venv) and componentize-js (pinned, npm ci).
## Idempotent and quick when done. Needs python3 (3.10+) and node (20+).
VENV := target/venv
setup: setup-rust setup-nats target/guest-tools.stamp setup-chromium

## host/build.rs watches this stamp: touching it once either tool is (re)installed
## makes the next build build the Python and JavaScript guests, even when the
## host was built before (`make demo` first). build.rs creates it dated 1970
## when missing, so this rule runs after any install.
target/guest-tools.stamp: $(VENV)/.installed guest-sdk/js/node_modules/.installed
	touch $@

## The approvals page's tests drive a real headless Chromium over WebDriver:
## Debian's chromium and chromium-driver (needs root and apt; skipped when present).
setup-chromium:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		{ mkdir -p target; { DEBIAN_FRONTEND=noninteractive apt-get -qq update && \
		    DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends chromium chromium-driver; \
		  } > target/apt-chromium.log 2>&1 || { cat target/apt-chromium.log >&2; echo "error: could not install chromium and chromium-driver (needs root and apt)" >&2; exit 1; }; }

## The worker tests start a real nats-server with JetStream (Debian's
## package; any 2.9 or later has JetStream).
setup-nats:
	@command -v nats-server > /dev/null || { \
		command -v apt-get > /dev/null || { echo "error: install nats-server (2.9 or later) for the worker tests" >&2; exit 1; }; \
		apt-get install -y -qq --no-install-recommends nats-server > /dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends nats-server > /dev/null; }; }
	@nats-server --help 2>&1 | grep -q -- '--jetstream' || { echo "error: this nats-server has no JetStream (-js): install 2.9 or later" >&2; exit 1; }

## What the demo needs: the Rust guest target.
setup-rust:
	rustup target add $(TARGET)
	rustup component add rustfmt clippy

$(VENV)/.installed: guest-sdk/python/requirements.txt
	@command -v python3 > /dev/null || { echo "error: python3 is needed to build Python guests: install Python 3.10 or newer" >&2; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r guest-sdk/python/requirements.txt
	touch $@

guest-sdk/js/node_modules/.installed: guest-sdk/js/package-lock.json
	@command -v npm > /dev/null || { echo "error: node and npm are needed to build JavaScript guests: install Node.js 20 or newer" >&2; exit 1; }
	cd guest-sdk/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Build guests and host, then run the bundled demo offline (scripted model).
## Needs only Rust: the Python and JavaScript guests wait for `make setup`.
## Leaves the debug binary at target/debug/warden.
demo: setup-rust
	$(CARGO) run -p warden -- demo

## Install an optimized `warden` into ~/.cargo/bin (a release build: wasmtime
## is compiled again, optimized). Needs only Rust.
install: setup-rust
	$(CARGO) install --locked --path host

## Every test: host unit and integration tests, guest unit tests (Rust,
## JavaScript and the code agent's Python), doc tests;
## then every policy in policies/ is checked (--strict) and its cases in
## policies/tests/ run, as a policy author would; the benchmark's policies in
## bench/injection/ are checked (--strict) too.
## The policy loop uses the binary `cargo test` just built: `cargo run -p
## warden` would resolve features for one package and rebuild the host.
## `check` loads each policy's components as `run` would;
## email-assistant.toml names a mail component not in this repository, so
## it is checked without loading.
WARDEN := $(or $(CARGO_TARGET_DIR),target)/debug/warden
test: setup
	$(CARGO) test --workspace
	node --import ./guest-sdk/js/node/register.mjs --test tools/jsonpath-js/
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python -m unittest discover -s agents/codeact-py
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/python -m unittest discover -s guest-sdk/python
	@for p in policies/*.toml; do \
		$(WARDEN) check --strict $$(case $$p in */email-assistant.toml) echo --no-load;; esac) $$p > /dev/null || exit 1; \
		$(WARDEN) policy test $$p policies/tests/$$(basename $$p) || exit 1; \
	done
	@for p in bench/injection/*/policy.toml; do \
		$(WARDEN) check --strict $$p > /dev/null || exit 1; \
	done

## Formatting and lints, as CI runs them; `.ci/unwraps` keeps unwrap() and
## expect() out of host code that handles outside data (each one left is
## listed with why it cannot fail).
lint: setup lint-k8s
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash .ci/unwraps

## The Kubernetes manifests against the Kubernetes schemas
## (kubernetes-validate, pinned in deploy/kubernetes/requirements.txt) and
## KEDA's (deploy/kubernetes/schemas/), and the security settings they
## promise; the self-test checks that broken manifests fail.
lint-k8s: $(VENV)/.k8s-installed
	$(VENV)/bin/python deploy/kubernetes/check.py --self-test

$(VENV)/.k8s-installed: $(VENV)/.installed deploy/kubernetes/requirements.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/kubernetes/requirements.txt
	touch $@

## Benchmarks (release build): mediated tool call vs raw wasmtime, import
## round trip, policy decision.
bench: setup bench-injection
	env -u RUST_BACKTRACE $(CARGO) bench -p warden --bench floor --bench mediation --bench policy --bench model_call --bench egress --bench audit --bench mcp --bench languages --bench concurrency --bench start --bench python --bench serve --bench cluster

## The prompt-injection benchmark (bench/injection/README.md): per scenario,
## benign tasks without a person, asks, attack success with no human and
## with every ask approved. Decisions, not timings: a debug build will do.
## BENCH_ARGS=--json for JSON, BENCH_ARGS="--scenario crm" for one.
bench-injection: setup-rust
	$(CARGO) run -p warden --example injection -- $(BENCH_ARGS)

## Remove compiled components from the cache.
clean-cache:
	rm -rf "$${WARDEN_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/warden}/components"

## Fuzz the policy parser, the decision function, the egress URL matcher
## and the MCP stdio framing (nightly; installs cargo-fuzz), one target
## after the other. FUZZ_SECONDS per target, default 600.
FUZZ_SECONDS ?= 600
fuzz:
	rustup toolchain install nightly --profile minimal
	cargo install cargo-fuzz --locked
	$(CARGO) build --release --target $(TARGET) --target-dir target/guests \
		-p react -p calc -p text -p fetch -p files -p warden-test-guests -p injection-tool
	for t in policy_parse policy_decide url_match mcp_framing; do \
		mkdir -p fuzz/corpus/$$t; \
		(cd fuzz && WARDEN_GUESTS_DIR=$(CURDIR)/target/guests/$(TARGET)/release \
			cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=30) || exit 1; \
	done
