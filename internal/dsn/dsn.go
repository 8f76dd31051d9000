// Package dsn holds the connection-string rules shared by the PostgreSQL
// adapters (adapters/pgx, adapters/pq): the TeeSQL sidecar's credential rule
// (FORMATS.md 9), the refusal of hosts the attested dialer cannot reach, and
// parse errors that never quote a password.
//
// Every check here runs before any network I/O.
package dsn

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Sentinel errors; the adapters re-export them under their own names.
var (
	// ErrBadDSN: the connection string could not be parsed, or names a host
	// the attested dialer cannot use.
	ErrBadDSN = errors.New("ratls/dsn: malformed DSN")
	// ErrBadCredentials: the user or password break the TeeSQL sidecar's
	// rule (user teesql_read or teesql_readwrite, password 64 lowercase hex
	// characters).
	ErrBadCredentials = errors.New("ratls/dsn: credentials not accepted by the TeeSQL rule")
)

// The TeeSQL sidecar's roles.
const (
	// ReadUser may only SELECT.
	ReadUser = "teesql_read"
	// ReadWriteUser may read and write.
	ReadWriteUser = "teesql_readwrite"
)

// SecretLen is the length of a TeeSQL cluster secret: 32 bytes, hex.
const SecretLen = 64

// CheckCredentials applies the TeeSQL sidecar's rule to a parsed user and
// password. Only lower-case hex is accepted: it is the canonical spelling
// (what `openssl rand -hex 32` and every TeeSQL tool print), so a secret has
// exactly one spelling and is never rewritten on its way to the sidecar. The
// error never contains the password, not even a character of it.
func CheckCredentials(user, password string) error {
	if user != ReadUser && user != ReadWriteUser {
		return fmt.Errorf("%w: user %s is neither %s nor %s", ErrBadCredentials, quoteUser(user), ReadUser, ReadWriteUser)
	}
	if len(password) != SecretLen {
		return fmt.Errorf("%w: password must be %d lower-case hex characters, found %d bytes", ErrBadCredentials, SecretLen, len(password))
	}
	upper := false
	for i := 0; i < len(password); i++ {
		switch c := password[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			upper = true
		default:
			return fmt.Errorf("%w: password must be %d lower-case hex characters, found a non-hex character at offset %d", ErrBadCredentials, SecretLen, i)
		}
	}
	if upper {
		return fmt.Errorf("%w: password must be %d lower-case hex characters, found upper-case hex digits (write the secret in lower case)", ErrBadCredentials, SecretLen)
	}
	return nil
}

func quoteUser(user string) string {
	const max = 64
	if len(user) > max {
		return fmt.Sprintf("%q...", user[:max])
	}
	return fmt.Sprintf("%q", user)
}

// CheckHost refuses hosts the attested dialer cannot reach: none at all, and
// unix sockets (an absolute path, or a name starting with @), which drivers
// would otherwise pick by default on a machine running PostgreSQL locally.
func CheckHost(host string) error {
	switch {
	case host == "":
		return fmt.Errorf("%w: no host", ErrBadDSN)
	case filepath.IsAbs(host), strings.HasPrefix(host, "/"), strings.HasPrefix(host, "@"):
		return fmt.Errorf("%w: host %q is a unix socket; RA-TLS needs a TCP host name or address", ErrBadDSN, host)
	}
	return nil
}

// Malformed wraps a driver's parse error of dsn as ErrBadDSN. Drivers quote
// the input in their messages (net/url quotes a whole URL, password
// included, and other messages quote the fragment they stumbled on), so the
// driver error is not kept in the chain.
//
// When parse is given (the driver's parser), the message comes from parsing
// dsn again with every password redacted: nothing the driver quotes can then
// be a fragment of the password, whatever characters it holds. If the
// redacted DSN parses, the fault was in the password itself, and the message
// says so without showing it. Either way the text is also scrubbed (Scrub).
func Malformed(dsn string, err error, parse func(string) error) error {
	if parse != nil {
		if redacted := Redact(dsn); redacted != dsn {
			if err = parse(redacted); err == nil {
				err = errors.New("the password (not shown) is malformed")
			}
		}
	}
	msg := "unparsable"
	if err != nil {
		msg = Scrub(err.Error(), dsn)
	}
	return fmt.Errorf("%w: %s", ErrBadDSN, msg)
}

// Redact returns dsn with every password (see Scrub) replaced by "xxxxx".
func Redact(dsn string) string {
	var b strings.Builder
	last := 0
	for _, sp := range passwordSpans(dsn) {
		if sp[0] < last {
			continue // overlaps a span already redacted
		}
		b.WriteString(dsn[last:sp[0]])
		b.WriteString("xxxxx")
		last = sp[1]
	}
	b.WriteString(dsn[last:])
	return b.String()
}

// Scrub removes from msg every password candidate of dsn (see
// passwordSpans) and every run of 16 or more hex digits.
func Scrub(msg, dsn string) string {
	cands := passwordCandidates(dsn)
	// Longest first, so that a short candidate cannot break up a longer one.
	sort.Slice(cands, func(i, j int) bool { return len(cands[i]) > len(cands[j]) })
	for _, p := range cands {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return scrubHex(msg)
}

// passwordCandidates lists what could be the password in dsn: each span of
// passwordSpans, its percent-decoded form, and its words.
func passwordCandidates(dsn string) []string {
	var out []string
	for _, sp := range passwordSpans(dsn) {
		s := dsn[sp[0]:sp[1]]
		out = append(out, s)
		if dec, ok := percentDecode(s); ok && dec != s {
			out = append(out, dec)
		}
		// An unterminated quote makes the span run to the end of the DSN;
		// a driver may quote only a part of it.
		if f := strings.Fields(s); len(f) > 1 {
			out = append(out, f...)
		}
	}
	return out
}

// passwordSpans finds, in ascending order, where the password could be in a
// DSN that may not parse: the userinfo after the first colon of a URL, and
// the values of password= parameters in either syntax. Being lenient only
// over-redacts.
func passwordSpans(dsn string) [][2]int {
	var out [][2]int
	if i := strings.Index(dsn, "://"); i >= 0 {
		start := i + len("://")
		if at := strings.LastIndex(dsn[start:], "@"); at >= 0 {
			if colon := strings.Index(dsn[start:start+at], ":"); colon >= 0 && colon+1 < at {
				out = append(out, [2]int{start + colon + 1, start + at})
			}
		}
	}
	// password=VALUE in a URL query or a keyword/value string; the value
	// ends at &, whitespace, or the closing quote.
	lower := strings.ToLower(dsn)
	for i := 0; ; {
		j := strings.Index(lower[i:], "password")
		if j < 0 {
			break
		}
		k := i + j + len("password")
		for k < len(dsn) && dsn[k] == ' ' {
			k++
		}
		if k < len(dsn) && dsn[k] == '=' {
			k++
			for k < len(dsn) && dsn[k] == ' ' {
				k++
			}
			if from, to := passwordValue(dsn, k); to > from {
				out = append(out, [2]int{from, to})
			}
		}
		i = k
	}
	sort.Slice(out, func(a, b int) bool { return out[a][0] < out[b][0] })
	return out
}

// passwordValue returns the span of the parameter value starting at
// dsn[k]: inside single quotes (to the last quote, or to the end if there is
// none), or up to &, whitespace or the end.
func passwordValue(dsn string, k int) (from, to int) {
	s := dsn[k:]
	if strings.HasPrefix(s, "'") {
		end := strings.LastIndex(s[1:], "'")
		if end < 0 {
			return k + 1, len(dsn)
		}
		return k + 1, k + 1 + end
	}
	end := strings.IndexAny(s, "& \t\n\r")
	if end < 0 {
		return k, len(dsn)
	}
	return k, k + end
}

func percentDecode(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// scrubHex replaces runs of 16 or more hex digits: TeeSQL secrets are hex,
// and a run that long is never needed to understand a parse error.
func scrubHex(s string) string {
	const minRun = 16
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j < len(s) {
			if _, ok := unhex(s[j]); !ok {
				break
			}
			j++
		}
		switch {
		case j-i >= minRun:
			b.WriteString("xxxxx")
			i = j
		case j > i:
			b.WriteString(s[i:j])
			i = j
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}
