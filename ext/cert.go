package ext

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/teesql/ratls/tdx"
)

// FromCertificate extracts the attestation from cert's dstack extensions.
// It prefers .1.8 and falls back to .1.1 (+.1.2); if both are present they
// must carry the same quote. It returns an error wrapping ErrNoQuote,
// ErrMalformed or ErrQuoteMismatch.
//
// Every dstack extension present is parsed, used or not, and any that is
// malformed fails the whole certificate: a certificate that two readers could
// understand differently is rejected. The .1.1 quote must parse. Beside .1.8,
// a .1.2 event log is checked but the envelope's events are the ones
// returned. Other extensions are ignored.
func FromCertificate(cert *x509.Certificate) (*Attestation, error) {
	if cert == nil {
		return nil, errors.New("ext: FromCertificate: nil certificate")
	}
	values := make(map[string][]byte)
	for _, e := range cert.Extensions {
		if !isDstackOID(e.Id) {
			continue
		}
		key := e.Id.String()
		if _, dup := values[key]; dup {
			return nil, fmt.Errorf("%w: %s appears twice", ErrMalformed, oidName(e.Id))
		}
		v, err := unwrapOctetString(e.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, oidName(e.Id), err)
		}
		values[key] = v
	}
	get := func(oid asn1.ObjectIdentifier) ([]byte, bool) {
		v, ok := values[oid.String()]
		return v, ok
	}
	malformed := func(oid asn1.ObjectIdentifier, err error) error {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, oidName(oid), err)
	}

	var a *Attestation
	if env, ok := get(OIDAttestation); ok {
		var err error
		if a, err = parseEnvelope(env); err != nil {
			return nil, malformed(OIDAttestation, err)
		}
		a.SourceOID = OIDAttestation
	}
	if quote, ok := get(OIDTDXQuote); ok {
		if _, err := tdx.ParseQuote(quote); err != nil {
			return nil, malformed(OIDTDXQuote, err)
		}
		switch {
		case a == nil:
			a = &Attestation{Quote: cloneBytes(quote), SourceOID: OIDTDXQuote, Envelope: EnvelopeLegacy}
		case !bytes.Equal(a.Quote, quote):
			return nil, fmt.Errorf("%w: %s", ErrQuoteMismatch, describeDifference(quote, a.Quote))
		}
	}
	if log, ok := get(OIDEventLog); ok {
		events, err := parseEventLogJSON(log)
		if err != nil {
			return nil, malformed(OIDEventLog, err)
		}
		// Beside an envelope the legacy log is redundant: the envelope's
		// events are the ones read, as upstream does.
		if a != nil && a.Envelope == EnvelopeLegacy {
			a.Events = events
		}
	}

	var extra Attestation
	if v, ok := get(OIDAppID); ok {
		extra.AppID = v
	}
	if v, ok := get(OIDCertUsage); ok {
		if !utf8.Valid(v) {
			return nil, malformed(OIDCertUsage, errors.New("not valid UTF-8"))
		}
		extra.Usage = string(v)
	}
	if v, ok := get(OIDAppInfo); ok {
		extra.AppInfo = v
	}
	if a == nil {
		return nil, ErrNoQuote
	}
	a.AppID, a.Usage, a.AppInfo = extra.AppID, extra.Usage, extra.AppInfo
	return a, nil
}

func isDstackOID(oid asn1.ObjectIdentifier) bool {
	for _, n := range extensionNames {
		if n.oid.Equal(oid) {
			return true
		}
	}
	return false
}

// unwrapOctetString returns the content of the DER OCTET STRING that dstack
// puts inside each extension's extnValue. The OCTET STRING must be the whole
// value. The result is a copy.
func unwrapOctetString(v []byte) ([]byte, error) {
	var raw []byte
	rest, err := asn1.Unmarshal(v, &raw)
	if err != nil {
		return nil, fmt.Errorf("value is not a DER OCTET STRING: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the OCTET STRING", len(rest))
	}
	return cloneBytes(raw), nil
}

// describeDifference says where two quotes part, for ErrQuoteMismatch.
func describeDifference(legacy, envelope []byte) string {
	i := 0
	for i < len(legacy) && i < len(envelope) && legacy[i] == envelope[i] {
		i++
	}
	return fmt.Sprintf(".1.1 quote is %d bytes, .1.8 quote is %d bytes, first difference at byte %d", len(legacy), len(envelope), i)
}

// Extensions returns the certificate extensions carrying a: .1.8 (V0) when
// legacy is false, .1.1 and .1.2 when it is true; plus .1.3/.1.4/.1.9 when
// the corresponding fields are set. Each value is wrapped in an OCTET STRING
// as dstack does. All are non-critical. In legacy form .1.2 is written only
// when a has events.
func Extensions(a *Attestation, legacy bool) ([]pkix.Extension, error) {
	if a == nil || len(a.Quote) == 0 {
		return nil, errors.New("ext: Extensions: no quote")
	}
	var exts []pkix.Extension
	add := func(oid asn1.ObjectIdentifier, value []byte) error {
		der, err := asn1.Marshal(value)
		if err != nil {
			return fmt.Errorf("ext: Extensions: %s: %w", oidName(oid), err)
		}
		exts = append(exts, pkix.Extension{Id: oid, Value: der})
		return nil
	}
	if legacy {
		if err := add(OIDTDXQuote, a.Quote); err != nil {
			return nil, err
		}
		if len(a.Events) > 0 {
			log, err := MarshalEventLogJSON(a.Events)
			if err != nil {
				return nil, err
			}
			if err := add(OIDEventLog, log); err != nil {
				return nil, err
			}
		}
	} else {
		env, err := MarshalEnvelope(a, EnvelopeV0)
		if err != nil {
			return nil, err
		}
		if err := add(OIDAttestation, env); err != nil {
			return nil, err
		}
	}
	if len(a.AppID) > 0 {
		if err := add(OIDAppID, a.AppID); err != nil {
			return nil, err
		}
	}
	if a.Usage != "" {
		if err := add(OIDCertUsage, []byte(a.Usage)); err != nil {
			return nil, err
		}
	}
	if len(a.AppInfo) > 0 {
		if err := add(OIDAppInfo, a.AppInfo); err != nil {
			return nil, err
		}
	}
	return exts, nil
}
