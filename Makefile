# Herald — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/herald
FUZZTIME ?= 10s

.PHONY: run build test bench fuzz clean

## run: a dev server on http://127.0.0.1:8080 with its data in ./data
# The binary is built, then exec'd, so that it is make's own child: on
# Ctrl-C it shuts down cleanly and exits 0, and make reports no error
# (go run would exit 1 on the signal).
run:
	$(GO) build -o $(BIN) ./cmd/herald
	exec ./$(BIN) serve --dev --data-dir ./data

## build: the binary in bin/herald
build:
	$(GO) build -o $(BIN) ./cmd/herald

## test: vet, then every test (unit and e2e) with the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

## bench: the Go benchmarks (store appends and reads, hub fan-out)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./store/ ./server/

## fuzz: a short run of every fuzzer (FUZZTIME each)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseCursor$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzValidateChannel$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzCompilePattern$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzIdentify$$' -fuzztime $(FUZZTIME) ./server/
	$(GO) test -run '^$$' -fuzz '^FuzzEventFraming$$' -fuzztime $(FUZZTIME) ./transports/sse/

clean:
	rm -rf bin
