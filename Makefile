# Herald — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/herald
# A fuzz run is bounded by a count of inputs, not a duration: with a
# duration, Go's fuzz coordinator (before go1.27, golang/go#75804) can fail a
# target with "context deadline exceeded" at the deadline, having found nothing.
FUZZTIME ?= 100000x
# Tools the checks use, installed into the project (bin/ is not committed),
# one folder per version so that a new version is installed, not skipped.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := bin/tools/staticcheck-$(STATICCHECK_VERSION)/staticcheck

.PHONY: run build test deps check bench fuzz campaign clean

## run: a dev server on http://127.0.0.1:8080 with its data in ./data
# The binary is built, then exec'd, so that it is make's own child: on
# Ctrl-C it shuts down cleanly and exits 0, and make reports no error
# (go run would exit 1 on the signal).
# DATA and RUN_FLAGS (extra serve flags) may be set: make run RUN_FLAGS=--addr=127.0.0.1:9090
DATA ?= ./data
run:
	$(GO) build -o $(BIN) ./cmd/herald
	exec $(BIN) serve --dev --data-dir $(DATA) $(RUN_FLAGS)

## build: the binary in bin/herald
build:
	$(GO) build -o $(BIN) ./cmd/herald

## test: everything CI runs, in order: deps, check, every test (unit and
## e2e) with the race detector — also the bench and the streaming
## transports on their portable socket readers (no epoll) — then a short
## run of every fuzzer
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory check
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -race -count=1 -tags noepoll ./internal/bench/ ./transports/...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=40000x

## deps: install what the tests need beyond Go when it is missing (nginx,
## with apt-get; without root it prints the command to run)
deps:
	@scripts/deps

## check: go vet, staticcheck, go.mod tidy, and the macOS and Windows builds
check: $(STATICCHECK)
	$(GO) vet ./...
	$(GO) vet -tags campaign ./e2e/
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=darwin $(GO) build -o /dev/null ./cmd/herald
	GOOS=windows $(GO) build -o /dev/null ./cmd/herald

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## bench: the Go benchmarks (store appends and reads, hub fan-out)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./store/ ./server/

## fuzz: a short run of every fuzzer (FUZZTIME each)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseCursor$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzValidateChannel$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzCompilePattern$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzIdentify$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzScanJSONValue$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePublishBody$$' -fuzztime $(FUZZTIME) ./server/httpapi/
	$(GO) test -run '^$$' -fuzz '^FuzzEventFraming$$' -fuzztime $(FUZZTIME) ./transports/sse/
	$(GO) test -run '^$$' -fuzz '^FuzzFrameReader$$' -fuzztime $(FUZZTIME) ./transports/ws/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./transports/ws/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePoll$$' -fuzztime $(FUZZTIME) ./transports/longpoll/
	$(GO) test -run '^$$' -fuzz '^FuzzAPIBodies$$' -fuzztime $(FUZZTIME) ./server/httpapi/
	$(GO) test -run '^$$' -fuzz '^FuzzConfigFile$$' -fuzztime $(FUZZTIME) ./internal/app/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyBackup$$' -fuzztime $(FUZZTIME) ./store/
	$(GO) test -run '^$$' -fuzz '^FuzzLogKey$$' -fuzztime $(FUZZTIME) ./store/

## campaign: the reliability campaign (not in test: minutes): SIGKILLs
## under load — subscribers direct and through a bad network, webhooks,
## data sync from PostgreSQL — then a checker over history, every
## subscriber, every endpoint and every row; set HERALD_CAMPAIGN_KILLS,
## _PUBLISHES and _SEED (printed) to change or replay it
campaign:
	@$(MAKE) --no-print-directory deps
	HERALD_E2E_NORACE=1 $(GO) test -tags campaign -run '^TestCampaign' -count=1 -timeout 40m -v ./e2e/

clean:
	rm -rf bin
