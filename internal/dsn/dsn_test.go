package dsn

import (
	"errors"
	"fmt"
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
			err := Malformed(tt.dsn, driverErr, nil)
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

// A driver message that quotes a fragment of the password, or the password
// escaped (%q), must not reveal it: with the parser at hand, Malformed
// reports the error of the DSN parsed again without the password.
func TestMalformedReparsesWithoutPassword(t *testing.T) {
	t.Parallel()
	// parse mimics net/url and drivers: it quotes the fragment at fault,
	// Go-escaped, or fails on the port.
	parse := func(dsn string) error {
		u, err := url.Parse(dsn)
		if err != nil {
			return err
		}
		if u.Port() != "" && u.Port() != "5432" {
			return fmt.Errorf("invalid port %q after host %q", u.Port(), u.Host)
		}
		return nil
	}
	tests := []struct {
		name, dsn, want string
		// secret are fragments of the password the message must not hold.
		secret []string
	}{
		{"fragment after an @ in the password", "postgres://app:p@ss:w0rd/x@db.example:99/app", `invalid port "99"`, []string{"p@ss", "w0rd"}},
		{"bad escape in the password", "postgres://app:S3cr%zzpw@db.example/app", "the password (not shown) is malformed", []string{"S3cr", "%zz", "zzpw"}},
		{"escaped backslash", `postgres://app:Secr\et@db.example:99/app`, `invalid port "99"`, []string{"Secr", `r\\e`, `\et`}},
		{"keyword value", "host=db.example password='top secret' port=abc", "", []string{"top", "secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Without the parser, only the candidates are scrubbed: the
			// fragments would show.
			err := Malformed(tt.dsn, parse(tt.dsn), parse)
			require.ErrorIs(t, err, ErrBadDSN)
			for _, frag := range tt.secret {
				assert.NotContains(t, err.Error(), frag)
			}
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://u:pw@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:p@w:d@h:1/db?password=x&sslmode=a", "postgres://u:xxxxx@h:1/db?password=xxxxx&sslmode=a"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"host=h password='a b' user=u", "host=h password='xxxxx' user=u"},
		{"host=h password='unterminated user=u", "host=h password='xxxxx"},
		{"host=h PASSWORD = pw user=u", "host=h PASSWORD = xxxxx user=u"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Redact(tt.in), tt.in)
	}
}
