# The two set-up commands of the README. Both work on a fresh machine.

.PHONY: demo test check

# The main job: the end-to-end demo on a simulated TEE stack and the local PostgreSQL.
demo:
	@bash scripts/ensure-postgres.sh
	go run ./cmd/ratls demo

# The tests, with the race detector, against the local PostgreSQL.
test:
	@bash scripts/ensure-postgres.sh
	go vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	go test -race -count=1 ./...
