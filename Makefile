# The two commands the README promises: `make demo` (dd against a local simulator) and `make test`.
GO ?= go
BIN := bin

.PHONY: build demo test bench clean

build:
	$(GO) build -o $(BIN)/dd .
	$(GO) build -o $(BIN)/discordsim ./cmd/discordsim

demo: build
	./scripts/demo.sh

# What CI runs (.ci/run calls this target).
test:
	./scripts/test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)
