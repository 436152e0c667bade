.PHONY: bench

# Grant engine benchmark (release build); `make bench BENCH_ARGS=--quick` runs only the small size.
bench:
	cargo bench -p jms-core --bench grant_engine -- $(BENCH_ARGS)
