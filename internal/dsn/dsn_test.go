package dsn

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestCheckCredentials(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, user, password string
		ok                   bool
	}{
		{"read", ReadUser, secret, true},
		{"readwrite", ReadWriteUser, secret, true},
		{"other user", "postgres", secret, false},
		{"user case", "TEESQL_READ", secret, false},
		{"user prefix", "teesql_read2", secret, false},
		{"empty password", ReadUser, "", false},
		{"short", ReadUser, secret[:63], false},
		{"long", ReadUser, secret + "0", false},
		{"upper case", ReadUser, strings.ToUpper(secret), false},
		{"one upper digit", ReadUser, secret[:63] + "F", false},
		{"non hex", ReadUser, secret[:63] + "g", false},
		{"multibyte", ReadUser, secret[:62] + "é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckCredentials(tt.user, tt.password)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadCredentials)
			assert.True(t, strings.HasPrefix(err.Error(), "ratls/dsn: "), err.Error())
			if tt.password != "" {
				assert.NotContains(t, err.Error(), tt.password)
			}
		})
	}
}

func TestCheckCredentialsNeverEchoesPassword(t *testing.T) {
	t.Parallel()
	// A password that is nearly right must not be half-quoted either.
	for _, pw := range []string{strings.ToUpper(secret), secret[:63] + "z", "hunter2hunter2"} {
		err := CheckCredentials(ReadUser, pw)
		require.Error(t, err)
		for i := 0; i+8 <= len(pw); i++ {
			require.NotContains(t, err.Error(), pw[i:i+8])
		}
	}
}

func TestCheckHost(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"db.example", "127.0.0.1", "::1"} {
		require.NoError(t, CheckHost(h), h)
	}
	for _, h := range []string{"", "/var/run/postgresql", "@abstract"} {
		require.ErrorIs(t, CheckHost(h), ErrBadDSN, h)
	}
}

func TestMalformedScrubsPassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, dsn, password string
	}{
		{"url bad port", "postgres://teesql_read:" + secret + "@host:99999/db", secret},
		{"url bad escape", "postgres://teesql_read:s3cr%zzet@host/db", "s3cr%zzet"},
		{"url escaped", "postgres://u:p%40ssw0rd-long@host:x/db", "p@ssw0rd-long"},
		{"url query", "postgres://host/db?password=topsecretvalue&port=x", "topsecretvalue"},
		{"keyword value", "host=h password='topsecret value port=1", "topsecret value"},
		{"keyword spaces", "host=h password = topsecretvalue port=x", "topsecretvalue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The driver error quotes the whole input, as net/url does.
			driverErr := &url.Error{Op: "parse", URL: tt.dsn, Err: errors.New("boom " + tt.password)}
			err := Malformed(tt.dsn, driverErr)
			require.ErrorIs(t, err, ErrBadDSN)
			assert.NotContains(t, err.Error(), tt.password)
			assert.NotErrorIs(t, err, driverErr, "the driver error, which quotes the password, must not stay in the chain")
			assert.Contains(t, err.Error(), "boom")
		})
	}
}

func TestScrubHexRuns(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "a xxxxx b deadbeef", Scrub("a "+secret+" b deadbeef", ""))
}
