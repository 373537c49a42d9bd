# dtx — distributed transactions for Go services on Kafka and PostgreSQL.
# `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export GOTOOLCHAIN := local

GO            ?= go
BIN           := bin
TOOLS         := .bin
ENV_FILE      := .dev/env
GOLANGCI_VERSION := v2.15.0
GOLANGCI      := $(TOOLS)/golangci-lint-$(GOLANGCI_VERSION)
BINARIES      := orchestrator outbox-relay projector dtxctl dtx-dev
TEST_FLAGS    ?= -race -count=1 -timeout 20m
PKGS          ?= ./...

# Runs a command with the environment that `make deps` prepared.
WITH_ENV := set -a; . ./$(ENV_FILE); set +a;

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## start (or reuse) PostgreSQL and Kafka; writes .dev/env
	@bash scripts/deps.sh

.PHONY: down
down: ## stop what `make deps` started, and nothing else
	@bash scripts/down.sh

.PHONY: build
build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))
	$(GO) build -o $(BIN)/example-outbox ./examples/outbox
	$(GO) build -o $(BIN)/example-o2c ./examples/order-to-cash

.PHONY: test
test: deps ## run unit and integration tests (-race) against real PostgreSQL and Kafka
	@$(WITH_ENV) echo "tests run against Kafka broker: $$DTX_KAFKA_KIND at $$DTX_KAFKA_BROKERS"
	@$(WITH_ENV) $(GO) vet $(PKGS)
	@$(WITH_ENV) $(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: demo
demo: deps build ## run the binaries end to end against real PostgreSQL and Kafka
	@$(WITH_ENV) bash scripts/demo.sh

BENCH_OUT     := .dev/bench.txt
BENCH_FLAGS   ?= -benchmem -timeout 60m

.PHONY: bench
bench: deps ## run the benchmarks; end with one table of figures, same-run baselines, ratios and goals
	@$(WITH_ENV) rc=0; $(GO) test -run '^$$' -bench . $(BENCH_FLAGS) $(PKGS) | tee $(BENCH_OUT) || rc=$$?; \
		pg=$$(psql "$$DTX_DATABASE_URL" -tAc 'SHOW server_version' 2>/dev/null || echo unknown); \
		echo; echo "Benchmark report: $$(date -u +%Y-%m-%d), $$(nproc) cores, PostgreSQL $$pg, Kafka $$DTX_KAFKA_KIND (output kept in $(BENCH_OUT))"; \
		$(GO) run ./cmd/dtx-dev bench report $(BENCH_OUT); \
		if [ $$rc -ne 0 ]; then echo "make bench: a benchmark failed (exit $$rc); the figures above are what ran"; exit $$rc; fi

.PHONY: bench-report
bench-report: ## print the table of the last `make bench` again
	@$(GO) run ./cmd/dtx-dev bench report $(BENCH_OUT)

.PHONY: lint
lint: $(GOLANGCI) ## go vet, gofmt and golangci-lint (installed at a pinned version)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GOLANGCI) run ./...

$(GOLANGCI):
	@mkdir -p $(TOOLS)
	GOBIN=$(CURDIR)/$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	@mv $(TOOLS)/golangci-lint $(GOLANGCI)

.PHONY: fmt
fmt: ## format the Go sources
	gofmt -w $$(git ls-files '*.go')

.PHONY: up
up: ## docker compose: PostgreSQL, Kafka and the three binaries (needs Docker)
	docker compose up -d --build

.PHONY: compose-down
compose-down: ## docker compose: stop and remove what `make up` started
	docker compose down

.PHONY: clean
clean: ## remove build outputs (keeps the cached Kafka jars and data)
	rm -rf $(BIN)
