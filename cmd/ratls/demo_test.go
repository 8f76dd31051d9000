package main

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	pgUp := false
	if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", 2*time.Second); err == nil {
		c.Close()
		pgUp = true
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL is not reachable at 127.0.0.1:5432 (CI=true): %v", err)
	}
	r := runCmd(t, nil, "demo")
	require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	out := r.stdout
	assert.True(t, strings.HasPrefix(out, "ratls demo: SIMULATED TEE"), out)
	assertRootBanner(t, r.stderr, "NOT INTEL", "simulated TEE")
	for _, want := range []string{"UpToDate", "key binding", "compose hash", "FMSPC", "refused", "quote does not bind the certificate key", "bytes it received      0"} {
		assert.Contains(t, out, want)
	}
	if pgUp {
		assert.Contains(t, out, "current_user=postgres")
		assert.Contains(t, out, "PostgreSQL")
	}
}

func TestDemoWithoutPostgres(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	r := runCmd(t, map[string]string{"DATABASE_URL": "postgres://postgres@" + addr + "/postgres"}, "demo")
	require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	for _, want := range []string{"SIMULATED TEE", "not reachable at " + addr, "make demo", "SERVING", "mutual attestation", "quote does not bind"} {
		assert.Contains(t, r.stdout, want)
	}
}

func TestClientDSN(t *testing.T) {
	t.Parallel()
	got, err := clientDSN("postgres://u:p@db.example:5432/app?sslmode=disable", "127.0.0.1:4000")
	require.NoError(t, err)
	assert.Equal(t, "postgres://u:p@127.0.0.1:4000/app?sslmode=disable", got)
	got, err = clientDSN("user=u dbname=app host=db port=5432", "127.0.0.1:4000")
	require.NoError(t, err)
	assert.Equal(t, "user=u dbname=app host=db port=5432 host=127.0.0.1 port=4000", got)
}
