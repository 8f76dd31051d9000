package testpki

import (
	"encoding/asn1"
	"fmt"
)

// OIDs of Intel's SGX PCK certificate extension (SGX PCK Certificate and
// CRL Profile). Sub-identifiers of OIDSGXExtension: 1 PPID, 2 TCB (2.1-2.16
// sgxtcbcompNNsvn, 2.17 pcesvn, 2.18 cpusvn), 3 PCE-ID, 4 FMSPC, 5 SGX type,
// 6 platform instance ID, 7 configuration.
var (
	OIDSGXExtension = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
)

func sgxOID(arcs ...int) asn1.ObjectIdentifier {
	return append(append(asn1.ObjectIdentifier{}, OIDSGXExtension...), arcs...)
}

// pckExtensions is the content of the SGX extension of a PCK certificate.
type pckExtensions struct {
	ppid       [16]byte
	cpuSVN     [16]byte // also the 16 sgxtcbcompNNsvn values
	pceSVN     uint16
	pceID      [2]byte
	fmspc      [6]byte
	ca         CAType
	instanceID [16]byte // platform CA only
}

func (a *Authority) pckExtensions() pckExtensions {
	return pckExtensions{
		ppid:       a.ppid,
		cpuSVN:     a.cpuSVN,
		pceSVN:     a.pceSVN,
		pceID:      a.pceID,
		fmspc:      a.fmspc,
		ca:         a.ca,
		instanceID: [16]byte(derive("platform instance", 16)),
	}
}

// An SGX extension entry is always SEQUENCE { OID, value }; the value's
// type varies (OCTET STRING, INTEGER, ENUMERATED, BOOLEAN, SEQUENCE).
type sgxEntry[T any] struct {
	ID    asn1.ObjectIdentifier
	Value T
}

// marshal encodes the extension value exactly as Intel's PCK certificates
// carry it: SEQUENCE OF entries in the order PPID, TCB, PCE-ID, FMSPC, SGX
// type, then (platform CA only) platform instance ID and configuration.
func (e pckExtensions) marshal() ([]byte, error) {
	var entries []any
	add := func(v any) { entries = append(entries, v) }

	add(sgxEntry[[]byte]{sgxOID(1), e.ppid[:]})
	var tcb []any
	for i, svn := range e.cpuSVN {
		tcb = append(tcb, sgxEntry[int]{sgxOID(2, i+1), int(svn)})
	}
	tcb = append(tcb, sgxEntry[int]{sgxOID(2, 17), int(e.pceSVN)})
	tcb = append(tcb, sgxEntry[[]byte]{sgxOID(2, 18), e.cpuSVN[:]})
	tcbSeq, err := marshalSeq(tcb)
	if err != nil {
		return nil, err
	}
	add(sgxEntry[asn1.RawValue]{sgxOID(2), tcbSeq})
	add(sgxEntry[[]byte]{sgxOID(3), e.pceID[:]})
	add(sgxEntry[[]byte]{sgxOID(4), e.fmspc[:]})
	sgxType := asn1.Enumerated(0) // Processor
	if e.ca == PlatformCA {
		sgxType = 1
	}
	add(sgxEntry[asn1.Enumerated]{sgxOID(5), sgxType})
	if e.ca == PlatformCA {
		add(sgxEntry[[]byte]{sgxOID(6), e.instanceID[:]})
		// Configuration: dynamicPlatform, cachedKeys, SMTEnabled, as on
		// the recorded platform.
		conf, err := marshalSeq([]any{
			sgxEntry[bool]{sgxOID(7, 1), true},
			sgxEntry[bool]{sgxOID(7, 2), true},
			sgxEntry[bool]{sgxOID(7, 3), true},
		})
		if err != nil {
			return nil, err
		}
		add(sgxEntry[asn1.RawValue]{sgxOID(7), conf})
	}
	seq, err := marshalSeq(entries)
	if err != nil {
		return nil, err
	}
	return seq.FullBytes, nil
}

// marshalSeq encodes each item and wraps them in one SEQUENCE.
func marshalSeq(items []any) (asn1.RawValue, error) {
	var content []byte
	for _, it := range items {
		b, err := asn1.Marshal(it)
		if err != nil {
			return asn1.RawValue{}, fmt.Errorf("testpki: encoding SGX extension: %w", err)
		}
		content = append(content, b...)
	}
	full, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: content})
	if err != nil {
		return asn1.RawValue{}, fmt.Errorf("testpki: encoding SGX extension: %w", err)
	}
	return asn1.RawValue{FullBytes: full}, nil
}
