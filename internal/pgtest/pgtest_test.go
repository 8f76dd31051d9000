package pgtest

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSetupConcurrentAndIdempotent(t *testing.T) {
	Require(t)
	// As several test binaries do at once.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = setup()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	ctx := context.Background()
	c := Admin(t)
	rows, err := c.Query(ctx, "SELECT id, name FROM "+Table+" ORDER BY id")
	require.NoError(t, err)
	var got []Row
	for rows.Next() {
		var r Row
		require.NoError(t, rows.Scan(&r.ID, &r.Name))
		got = append(got, r)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, Rows, got)

	for _, tc := range []struct {
		role, table, priv string
		want              bool
	}{
		{ReadUser, Table, "SELECT", true},
		{ReadUser, Table, "INSERT", false},
		{ReadUser, ScratchTable, "SELECT", false},
		{ReadWriteUser, ScratchTable, "INSERT", true},
	} {
		var has bool
		require.NoError(t, c.QueryRow(ctx, "SELECT has_table_privilege($1, $2, $3)", tc.role, tc.table, tc.priv).Scan(&has))
		require.Equal(t, tc.want, has, "%s %s %s", tc.role, tc.priv, tc.table)
	}
}
