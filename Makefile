# The two commands the README promises: `make demo` (dd against a local simulator) and `make test`.
GO ?= go
BIN := bin

.PHONY: build demo test bench load clean

build:
	$(GO) build -o $(BIN)/dd .
	$(GO) build -o $(BIN)/discordsim ./cmd/discordsim
	$(GO) build -o $(BIN)/demo ./cmd/demo

# dd against a local simulated Discord, with a bot that prints the events it gets. Ctrl-C stops it.
demo: build
	$(BIN)/demo -dd $(BIN)/dd

# What CI runs (.ci/run calls this target).
test:
	./scripts/test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# dd measured from outside: the simulator, dd (and in cluster mode NATS) as separate processes, modest sizes (README "Measuring
# from outside the process" has the full-size commands).
load: build
	$(GO) build -o $(BIN)/ddload ./cmd/ddload
	$(BIN)/ddload -dd $(BIN)/dd -sim $(BIN)/discordsim -scenario firehose -shards 4 -rate 5000 -duration 5s -batch-max 100
	$(BIN)/ddload -dd $(BIN)/dd -sim $(BIN)/discordsim -scenario shards -shards 100 -max-concurrency 25 -settle 10s -baseline-shards 20
	$(BIN)/ddload -dd $(BIN)/dd -sim $(BIN)/discordsim -scenario cluster -processes 3 -shards 6 -duration 10s

clean:
	rm -rf $(BIN)
