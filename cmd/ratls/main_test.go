package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every command, run in process, must leave no goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
