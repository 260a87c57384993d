# The two commands the README promises: `make demo` (dd against a local simulator) and `make test`.
GO ?= go
BIN := bin

.PHONY: build demo test bench clean

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

clean:
	rm -rf $(BIN)
