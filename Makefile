# The two commands: `make run` and `make test`. Both install what is missing (.venv with
# LocalStack and cargo-lambda) and start LocalStack unless it already runs.
.PHONY: run test agents bench build lint fmt clean

run:
	@scripts/run.sh

test:
	@scripts/test.sh $(ARGS)

# The real forwarding agents tests/agents.rs drives (syslog-ng from Debian, Splunk's HEC
# library from npm). Without them those tests say they are skipped; CI installs them.
agents:
	@scripts/agents.sh

# Benchmarks (docs/benchmarks.md): `make bench` or `make bench ARGS="cpu ingest"`.
bench:
	@scripts/bench.sh $(ARGS)

# Release zips for deployment: target/lambda/{audit-puller,ad-ingest,ad-compact}/bootstrap.zip
build:
	@bash -c 'source scripts/lib.sh && ensure_venv && cargo lambda build --release --output-format zip'

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf .run
