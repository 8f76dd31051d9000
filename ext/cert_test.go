package ext

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCertificateRoundTrip(t *testing.T) {
	t.Parallel()
	for name, env := range map[string][]byte{"full": fullEnvelope(t), "lite": liteEnvelope(t)} {
		for _, legacy := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "/V0", true: "/legacy"}[legacy], func(t *testing.T) {
				t.Parallel()
				a := mustParse(t, env)
				a.AppID = mustHex(t, fullAppID)
				a.Usage = "app:custom"
				a.AppInfo = []byte{0x81, 0xa1, 'k', 0x01}
				exts, err := Extensions(a, legacy)
				require.NoError(t, err)
				for _, e := range exts {
					assert.False(t, e.Critical)
				}

				got, err := FromCertificate(newCert(t, exts))
				require.NoError(t, err)
				assert.Equal(t, a.Quote, got.Quote)
				assert.Equal(t, a.Events, got.Events)
				assert.Equal(t, a.AppID, got.AppID)
				assert.Equal(t, "app:custom", got.Usage)
				assert.Equal(t, a.AppInfo, got.AppInfo)
				if legacy {
					assert.Equal(t, OIDTDXQuote, got.SourceOID)
					assert.Equal(t, EnvelopeLegacy, got.Envelope)
					assert.Nil(t, got.ReportData)
					assert.Empty(t, got.Config)
				} else {
					assert.Equal(t, OIDAttestation, got.SourceOID)
					assert.Equal(t, EnvelopeV0, got.Envelope)
					assert.Equal(t, a.ReportData, got.ReportData)
					assert.Equal(t, a.Config, got.Config)
				}
				got.SourceOID = nil
				if legacy {
					got.Envelope, got.ReportData, got.Config = a.Envelope, a.ReportData, a.Config
				}
				assert.Equal(t, a, got)
			})
		}
	}
}

// ext wraps v as dstack does and returns it as extension oid.
func ext(t *testing.T, oid asn1.ObjectIdentifier, v []byte) pkix.Extension {
	der, err := asn1.Marshal(v)
	require.NoError(t, err)
	return pkix.Extension{Id: oid, Value: der}
}

func TestFromCertificateSources(t *testing.T) {
	t.Parallel()
	full, lite := mustParse(t, fullEnvelope(t)), mustParse(t, liteEnvelope(t))
	fullLog, err := MarshalEventLogJSON(full.Events)
	require.NoError(t, err)
	v1, err := MarshalEnvelope(lite, EnvelopeV1)
	require.NoError(t, err)

	t.Run("both agree", func(t *testing.T) {
		t.Parallel()
		got, err := FromCertificate(newCert(t, []pkix.Extension{
			ext(t, OIDTDXQuote, lite.Quote), ext(t, OIDAttestation, liteEnvelope(t)),
		}))
		require.NoError(t, err)
		assert.Equal(t, OIDAttestation, got.SourceOID, ".1.8 is preferred")
		assert.Equal(t, lite.Events, got.Events)
	})
	t.Run("envelope events win over .1.2", func(t *testing.T) {
		t.Parallel()
		got, err := FromCertificate(newCert(t, []pkix.Extension{
			ext(t, OIDAttestation, liteEnvelope(t)), ext(t, OIDEventLog, fullLog),
		}))
		require.NoError(t, err)
		assert.Equal(t, lite.Events, got.Events)
	})
	t.Run("V1 envelope", func(t *testing.T) {
		t.Parallel()
		got, err := FromCertificate(newCert(t, []pkix.Extension{ext(t, OIDAttestation, v1)}))
		require.NoError(t, err)
		assert.Equal(t, EnvelopeV1, got.Envelope)
		assert.Equal(t, lite.Quote, got.Quote)
		assert.Equal(t, lite.Events, got.Events)
	})
	t.Run("legacy quote without log", func(t *testing.T) {
		t.Parallel()
		got, err := FromCertificate(newCert(t, []pkix.Extension{ext(t, OIDTDXQuote, full.Quote)}))
		require.NoError(t, err)
		assert.Equal(t, full.Quote, got.Quote)
		assert.Empty(t, got.Events)
	})
	t.Run("quotes differ", func(t *testing.T) {
		t.Parallel()
		_, err := FromCertificate(newCert(t, []pkix.Extension{
			ext(t, OIDTDXQuote, full.Quote), ext(t, OIDAttestation, liteEnvelope(t)),
		}))
		require.ErrorIs(t, err, ErrQuoteMismatch)
		assert.Contains(t, err.Error(), ".1.1 quote is 5010 bytes, .1.8 quote is 5006 bytes")
	})
	t.Run("no quote", func(t *testing.T) {
		t.Parallel()
		for _, exts := range [][]pkix.Extension{
			nil,
			{ext(t, OIDCertUsage, []byte("app:custom"))},
			{ext(t, OIDEventLog, fullLog), ext(t, OIDAppID, full.Quote[:20])},
			{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62397, 1, 7}, Value: []byte{0x04, 0x00}}},
		} {
			_, err := FromCertificate(newCert(t, exts))
			assert.ErrorIs(t, err, ErrNoQuote)
		}
	})
	t.Run("nil", func(t *testing.T) {
		t.Parallel()
		_, err := FromCertificate(nil)
		assert.Error(t, err)
	})
}

func TestFromCertificateRejects(t *testing.T) {
	t.Parallel()
	lite := liteEnvelope(t)
	quote := mustParse(t, lite).Quote
	raw := func(oid asn1.ObjectIdentifier, v []byte) pkix.Extension { return pkix.Extension{Id: oid, Value: v} }
	tests := []struct {
		name string
		exts []pkix.Extension
		want string
	}{
		{"unwrapped envelope", []pkix.Extension{raw(OIDAttestation, lite)}, "1.3.6.1.4.1.62397.1.8 (attestation envelope): value is not a DER OCTET STRING"},
		{"bytes after the OCTET STRING", []pkix.Extension{raw(OIDAttestation, append(wrapped(lite), 0))}, "1 bytes after the OCTET STRING"},
		{"BIT STRING", []pkix.Extension{raw(OIDTDXQuote, append([]byte{0x03, 0x02, 0x00}, 0xff))}, "1.3.6.1.4.1.62397.1.1 (TDX quote): value is not a DER OCTET STRING"},
		{"non-minimal length", []pkix.Extension{raw(OIDCertUsage, []byte{0x04, 0x81, 0x01, 'x'})}, "1.3.6.1.4.1.62397.1.4 (certificate usage): value is not a DER OCTET STRING"},
		{"length past the end", []pkix.Extension{raw(OIDAppID, []byte{0x04, 0x05, 1})}, "1.3.6.1.4.1.62397.1.3 (app id): value is not a DER OCTET STRING"},
		{"constructed OCTET STRING", []pkix.Extension{raw(OIDAppInfo, []byte{0x24, 0x03, 0x04, 0x01, 'x'})}, "1.3.6.1.4.1.62397.1.9 (app info): value is not a DER OCTET STRING"},
		{"double wrapped", []pkix.Extension{ext(t, OIDAttestation, wrapped(lite))}, "first byte 0x04"},
		{"bad envelope", []pkix.Extension{ext(t, OIDAttestation, lite[:100])}, "1.3.6.1.4.1.62397.1.8 (attestation envelope): V0: offset"},
		{"bad legacy quote", []pkix.Extension{ext(t, OIDTDXQuote, quote[:600])}, "1.3.6.1.4.1.62397.1.1 (TDX quote): tdx: malformed quote"},
		{"bad legacy quote beside envelope", []pkix.Extension{ext(t, OIDAttestation, lite), ext(t, OIDTDXQuote, []byte{1})}, "(TDX quote): tdx: malformed quote"},
		{"bad event log", []pkix.Extension{ext(t, OIDTDXQuote, quote), ext(t, OIDEventLog, []byte(`{}`))}, "1.3.6.1.4.1.62397.1.2 (event log): found {, want an array"},
		{"bad event log beside envelope", []pkix.Extension{ext(t, OIDAttestation, lite), ext(t, OIDEventLog, []byte(`[null]`))}, "(event log): event 0: null"},
		{"usage not UTF-8", []pkix.Extension{ext(t, OIDAttestation, lite), ext(t, OIDCertUsage, []byte{0xff})}, "(certificate usage): not valid UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := FromCertificate(newCert(t, tc.exts))
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	t.Run("duplicate extension", func(t *testing.T) {
		t.Parallel()
		// x509.ParseCertificate refuses duplicates; a hand-built value may not.
		cert := &x509.Certificate{Extensions: []pkix.Extension{ext(t, OIDAttestation, lite), ext(t, OIDAttestation, lite)}}
		_, err := FromCertificate(cert)
		require.ErrorIs(t, err, ErrMalformed)
		assert.Contains(t, err.Error(), "appears twice")
	})
}

func TestExtensionsRejects(t *testing.T) {
	t.Parallel()
	_, err := Extensions(nil, false)
	assert.Error(t, err)
	_, err = Extensions(&Attestation{}, true)
	assert.Error(t, err)
	_, err = Extensions(&Attestation{Quote: []byte{1}}, false)
	assert.Error(t, err, "V0 needs ReportData or a quote that parses")
	_, err = Extensions(&Attestation{Quote: []byte{1}, Events: []Event{{Event: "\xff"}}}, true)
	assert.Error(t, err)
}
