package dcap_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

// The recorded quote is UpToDate inside its collateral's window and its
// collateral expires 2025-07-19.
var (
	recordedValidAt   = time.Date(2025, 6, 25, 0, 0, 0, 0, time.UTC)
	recordedExpiredAt = time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC)
)

const recordedFMSPC = "B0C06F000000"

func recordedQuote(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote")
	require.NoError(t, err)
	return b
}

func recordedCollateral(t testing.TB) *dcap.Collateral {
	t.Helper()
	b, err := os.ReadFile("../testdata/dcap-qvl/tdx_quote_collateral.json")
	require.NoError(t, err)
	var c dcap.Collateral
	require.NoError(t, json.Unmarshal(b, &c))
	return &c
}

// mutateQuote parses q, lets f change the parsed quote, and re-encodes it
// without re-signing: the signatures stay those of the original.
func mutateQuote(t testing.TB, q []byte, f func(*tdx.Quote)) []byte {
	t.Helper()
	p, err := tdx.ParseQuote(q)
	require.NoError(t, err)
	c := p.UnsignedCopy()
	f(c)
	out, err := c.Marshal()
	require.NoError(t, err)
	return out
}

func newVerifier(t testing.TB, opts dcap.Options) *dcap.Verifier {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v, err := dcap.New(opts)
	require.NoError(t, err)
	return v
}

// clock is an injectable, settable time source.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.Set(t)
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
