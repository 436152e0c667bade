.PHONY: test demo bench

# The whole test suite (what CI runs): fmt, clippy, unit, property, integration and end-to-end tests.
test:
	scripts/test

# The demo scene (see README).
demo:
	scripts/demo

# Every benchmark, release build, figures printed. `make bench BENCH_ARGS=--quick`
# runs only the small grant-engine size. The NSS benchmark needs root (mount namespaces).
bench:
	cargo bench -p jms-core --bench grant_engine -- $(BENCH_ARGS)
	cargo bench -p nss_jms
	cargo bench -p jms-agent --bench auth_roundtrip
