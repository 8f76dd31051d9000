package ratlspgx_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every connection, pool, server and stack a test starts is closed by the
// end of the test binary.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
