.PHONY: test demo bench package

# The whole test suite (what CI runs): fmt, clippy, unit, property, integration and end-to-end tests.
test:
	scripts/deps --test
	scripts/test

# The demo scene (see README).
demo:
	scripts/demo

# Every benchmark, release build, figures printed. `make bench BENCH_ARGS=--quick`
# runs the grant-engine and sync benchmarks at their small sizes only. The NSS and session benchmarks need root (mount
# namespaces); the session, portal and accounts benchmarks run the release jms binaries built first.
bench:
	cargo build --release --workspace
	cargo bench -p jms-core --bench grant_engine -- $(BENCH_ARGS)
	cargo bench -p nss_jms
	cargo bench -p jms-agent --bench auth_roundtrip
	cargo bench -p jms-server --bench sync -- $(BENCH_ARGS)
	cargo bench -p jms-server --bench sync -- --only postgres $(BENCH_ARGS)
	cargo bench -p jms-e2e --bench sessions
	cargo bench -p jms-e2e --bench portal
	cargo bench -p jms-e2e --bench accounts

# jms-bastion and jms-server as .deb and .rpm in target/packages/ (needs
# cargo-deb and cargo-generate-rpm: bash .ci/run installs them).
package:
	scripts/package
