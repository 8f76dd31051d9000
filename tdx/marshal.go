package tdx

import (
	"encoding/binary"
	"fmt"
)

// Marshal encodes q in Intel's layout, from its fields. It is the inverse of
// ParseQuote (minus any zero padding the input carried) and exists for test
// authorities that mint quotes and for tests that re-encode a recorded quote
// with another REPORTDATA. The signature is written as it is in q: whoever
// changes the signed fields must re-sign, or expect verification to fail.
func (q *Quote) Marshal() ([]byte, error) {
	if q.Header.Version != 4 && q.Header.Version != 5 {
		return nil, fmt.Errorf("%w: version %d, want 4 or 5", ErrMalformed, q.Header.Version)
	}
	if q.Header.Version == 4 && q.BodyType != BodyTypeTD10 {
		return nil, fmt.Errorf("%w: a v4 quote carries only a TD 1.0 body", ErrMalformed)
	}
	if q.BodyType != BodyTypeTD10 && q.BodyType != BodyTypeTD15 {
		return nil, fmt.Errorf("%w: body type %d", ErrMalformed, q.BodyType)
	}
	out := q.marshalSigned()
	out = append(out, q.marshalSignatureData()...)
	return out, nil
}

// UnsignedCopy returns a copy of q whose SignedBytes are recomputed from its
// fields, so that a caller can change the header or body and sign the result.
func (q *Quote) UnsignedCopy() *Quote {
	c := *q
	c.signed = nil
	c.QEAuthData = append([]byte(nil), q.QEAuthData...)
	c.PCKChainPEM = append([]byte(nil), q.PCKChainPEM...)
	return &c
}

func (q *Quote) marshalSigned() []byte {
	var w writer
	h := &q.Header
	w.u16(h.Version)
	w.u16(h.AttestKeyType)
	w.u32(h.TEEType)
	w.u16(h.QESVN)
	w.u16(h.PCESVN)
	w.put(h.QEVendorID[:])
	w.put(h.UserData[:])
	size := TD10ReportSize
	if q.BodyType == BodyTypeTD15 {
		size = TD15ReportSize
	}
	if h.Version == 5 {
		w.u16(q.BodyType)
		w.u32(uint32(size))
	}
	t := &q.Body
	w.put(t.TEETCBSVN[:])
	w.put(t.MRSEAM[:])
	w.put(t.MRSignerSEAM[:])
	w.put(t.SEAMAttributes[:])
	w.put(t.TDAttributes[:])
	w.put(t.XFAM[:])
	w.put(t.MRTD[:])
	w.put(t.MRConfigID[:])
	w.put(t.MROwner[:])
	w.put(t.MROwnerConfig[:])
	for i := range t.RTMR {
		w.put(t.RTMR[i][:])
	}
	w.put(t.ReportData[:])
	if size == TD15ReportSize {
		w.put(t.TEETCBSVN2[:])
		w.put(t.MRServiceTD[:])
	}
	return w.b
}

func (q *Quote) marshalSignatureData() []byte {
	var cert writer
	cert.put(q.QEReport.Raw())
	cert.put(q.QEReportSignature[:])
	cert.u16(uint16(len(q.QEAuthData)))
	cert.put(q.QEAuthData)
	cert.u16(CertDataPCKChainPEM)
	cert.u32(uint32(len(q.PCKChainPEM)))
	cert.put(q.PCKChainPEM)

	var sig writer
	sig.put(q.Signature[:])
	sig.put(q.AttestKey[:])
	sig.u16(CertDataQEReport)
	sig.u32(uint32(len(cert.b)))
	sig.put(cert.b)

	var w writer
	w.u32(uint32(len(sig.b)))
	w.put(sig.b)
	return w.b
}

// NewEnclaveReport encodes an SGX report body from its fields (reserved
// bytes zero).
func NewEnclaveReport(e EnclaveReport) EnclaveReport {
	var w writer
	w.put(e.CPUSVN[:])
	w.u32(e.MiscSelect)
	w.put(make([]byte, 28))
	w.put(e.Attributes[:])
	w.put(e.MREnclave[:])
	w.put(make([]byte, 32))
	w.put(e.MRSigner[:])
	w.put(make([]byte, 96))
	w.u16(e.ISVProdID)
	w.u16(e.ISVSVN)
	w.put(make([]byte, 60))
	w.put(e.ReportData[:])
	return decodeEnclaveReport(w.b)
}

type writer struct{ b []byte }

func (w *writer) put(p []byte) { w.b = append(w.b, p...) }
func (w *writer) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *writer) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
