package dcap

import (
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/tdx"
)

func TestCRLBodyEncodings(t *testing.T) {
	t.Parallel()
	der := []byte{0x30, 0x03, 0x02, 0x01, 0x01}
	want := hex.EncodeToString(der)
	for name, body := range map[string]string{
		"DER":         string(der),
		"hex":         want,
		"HEX newline": strings.ToUpper(want) + "\n",
		"PEM":         "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n",
	} {
		got, err := crlBody([]byte(body))
		require.NoError(t, err, name)
		assert.Equal(t, want, got, name)
	}
	for name, body := range map[string]string{
		"empty":       "",
		"garbage":     "\x00garbage",
		"hex not DER": "0102",
		"PEM cert":    "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
	} {
		_, err := crlBody([]byte(body))
		require.Error(t, err, name)
	}
}

func TestIssuerChainHeader(t *testing.T) {
	t.Parallel()
	pem := "-----BEGIN CERTIFICATE-----\nMII+/w==\n-----END CERTIFICATE-----\n"
	for name, value := range map[string]string{
		"encodeURIComponent": strings.ReplaceAll(url.QueryEscape(pem), "+", "%20"),
		"path escaped":       url.PathEscape(pem),
		"plus left raw":      strings.ReplaceAll(strings.ReplaceAll(url.PathEscape(pem), "%2B", "+"), "%20", " "),
	} {
		h := http.Header{}
		h.Set("TCB-Info-Issuer-Chain", value)
		got, err := issuerChainHeader(h, "Tcb-Info-Issuer-Chain")
		require.NoError(t, err, name)
		assert.Equal(t, pem, got, name)
	}
	_, err := issuerChainHeader(http.Header{}, "TCB-Info-Issuer-Chain")
	require.ErrorContains(t, err, "no TCB-Info-Issuer-Chain header")
	h := http.Header{}
	h.Set("TCB-Info-Issuer-Chain", "%zz")
	_, err = issuerChainHeader(h, "TCB-Info-Issuer-Chain")
	require.Error(t, err)
}

func TestSignedBodyKeepsExactBytes(t *testing.T) {
	t.Parallel()
	value, sig, err := signedBody([]byte(`{"signature":"ab01","tcbInfo":{ "b" :1,"a":[ 2 ]}}`), "tcbInfo")
	require.NoError(t, err)
	assert.Equal(t, `{ "b" :1,"a":[ 2 ]}`, value)
	assert.Equal(t, "ab01", sig)
	for _, body := range []string{`{`, `{"tcbInfo":{}}`, `{"signature":"ab"}`, `{"tcbInfo":{},"signature":1}`} {
		_, _, err := signedBody([]byte(body), "tcbInfo")
		require.Error(t, err, body)
	}
}

func TestConverge(t *testing.T) {
	t.Parallel()
	all := []tdx.TCBStatus{
		tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded, tdx.TCBConfigurationNeeded,
		tdx.TCBConfigurationAndSWHardeningNeeded, tdx.TCBOutOfDate,
		tdx.TCBOutOfDateConfigurationNeeded, tdx.TCBRevoked,
	}
	for _, p := range all {
		assert.Equal(t, p, converge(p, tdx.TCBUpToDate), "an up-to-date component changes nothing")
		assert.Equal(t, tdx.TCBRevoked, converge(p, tdx.TCBRevoked), "a revoked component revokes")
	}
	want := map[tdx.TCBStatus]tdx.TCBStatus{
		tdx.TCBUpToDate:                          tdx.TCBOutOfDate,
		tdx.TCBSWHardeningNeeded:                 tdx.TCBOutOfDate,
		tdx.TCBConfigurationNeeded:               tdx.TCBOutOfDateConfigurationNeeded,
		tdx.TCBConfigurationAndSWHardeningNeeded: tdx.TCBOutOfDateConfigurationNeeded,
		tdx.TCBOutOfDate:                         tdx.TCBOutOfDate,
		tdx.TCBOutOfDateConfigurationNeeded:      tdx.TCBOutOfDateConfigurationNeeded,
		tdx.TCBRevoked:                           tdx.TCBRevoked,
	}
	for p, w := range want {
		assert.Equal(t, w, converge(p, tdx.TCBOutOfDate), p)
		// Any other non-UpToDate component status counts as out of date.
		assert.Equal(t, w, converge(p, tdx.TCBSWHardeningNeeded), p)
	}
}

func TestParsePEMCerts(t *testing.T) {
	t.Parallel()
	blk := "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"
	ders, err := parsePEMCerts([]byte(blk+blk+"\x00\n"), 3)
	require.NoError(t, err)
	assert.Len(t, ders, 2)
	_, err = parsePEMCerts([]byte(blk+blk+blk+blk), 3)
	require.ErrorContains(t, err, "more than 3")
	_, err = parsePEMCerts([]byte(blk+"trailing"), 3)
	require.ErrorContains(t, err, "non-PEM")
	_, err = parsePEMCerts([]byte("-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n"), 3)
	require.ErrorContains(t, err, "PRIVATE KEY")
}
