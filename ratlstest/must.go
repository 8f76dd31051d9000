package ratlstest

// TB is the part of testing.TB the helpers below use; *testing.T and
// *testing.B satisfy it. (Taking an interface keeps package testing out of
// binaries, such as the CLI, that import ratlstest.)
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// StartStack is NewStack for tests: it fails t on error and closes the
// stack when t ends.
func StartStack(t TB, opts StackOptions) *Stack {
	t.Helper()
	s, err := NewStack(opts)
	if err != nil {
		t.Fatalf("ratlstest: NewStack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Fatalf("ratlstest: Stack.Close: %v", err)
		}
	})
	return s
}

// StartEchoServer is NewEchoServer for tests: it fails t on error and
// closes the server when t ends.
func StartEchoServer(t TB) *EchoServer {
	t.Helper()
	e, err := NewEchoServer()
	if err != nil {
		t.Fatalf("ratlstest: NewEchoServer: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
