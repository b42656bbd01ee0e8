# One front door for the project's tasks; CI (.ci/run) calls these targets too.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Run the product on its embedded default: control plane, PostgreSQL pair, KMS, controller, API
	@scripts/run.sh

stop: ## Stop everything `make run` started
	@scripts/run.sh down

test: ## Install what is missing, start the real test environment, run every test, stop it
	@scripts/test.sh

reliability: ## Hostile input, verify timing and the leak scan on a private instance
	@e2e/reliability/run.sh

bench: ## On-demand benchmarks (envelope, store reads vs pgbench, controller scale)
	@scripts/bench.sh

lint: ## cargo fmt --check and clippy -D warnings, as CI runs them
	@scripts/lint.sh

testenv-up: ## Start the test environment and print its env file (left running)
	@e2e/testenv/testenv up

testenv-down: ## Stop the test environment
	@e2e/testenv/testenv down

.PHONY: help run stop test bench reliability lint testenv-up testenv-down
