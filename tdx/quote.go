// Package tdx reads and writes Intel TDX quotes (versions 4 and 5) in
// Intel's binary layout.
//
// It only parses: it checks lengths and structure, never signatures. A parsed
// Quote says what the quote claims; package dcap decides whether to believe
// it. Parsing is strict (every length field is bounds-checked, trailing bytes
// after the signature data must be zero padding) and never panics, whatever
// the input.
package tdx

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout constants from Intel's TDX DCAP Quote Generation Library and
// Quote Verification Library specifications.
const (
	HeaderSize        = 48
	TD10ReportSize    = 584 // TD 1.0 report body (quote v4, v5 body type 2)
	TD15ReportSize    = 648 // TD 1.5 report body (v5 body type 3)
	EnclaveReportSize = 384 // SGX report body (the QE report)
	SignatureSize     = 64  // raw ECDSA P-256 r||s
	AttestKeySize     = 64  // raw P-256 point X||Y

	TEETypeTDX          = 0x81
	AttestKeyTypeECDSA  = 2
	BodyTypeTD10        = 2
	BodyTypeTD15        = 3
	CertDataQEReport    = 6
	CertDataPCKChainPEM = 5

	// MaxQuoteSize caps the input accepted by ParseQuote. Real quotes are
	// about 5 KB; the cap only stops a hostile peer from making us scan
	// megabytes.
	MaxQuoteSize = 64 << 10
)

// ErrMalformed is returned (wrapped) for any quote that does not follow the
// layout.
var ErrMalformed = errors.New("tdx: malformed quote")

// Header is the 48-byte quote header.
type Header struct {
	Version       uint16
	AttestKeyType uint16
	TEEType       uint32
	QESVN         uint16 // reserved in v4/v5
	PCESVN        uint16 // reserved in v4/v5
	QEVendorID    [16]byte
	UserData      [20]byte
}

// TDReport is the TD report body: the measurements of the trust domain.
// TEETCBSVN2 and MRServiceTD are zero unless the body is TD 1.5.
type TDReport struct {
	TEETCBSVN      [16]byte
	MRSEAM         [48]byte
	MRSignerSEAM   [48]byte
	SEAMAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MRTD           [48]byte
	MRConfigID     [48]byte
	MROwner        [48]byte
	MROwnerConfig  [48]byte
	RTMR           [4][48]byte
	ReportData     [64]byte
	TEETCBSVN2     [16]byte // TD 1.5 only
	MRServiceTD    [48]byte // TD 1.5 only
}

// Debug reports whether the TD runs in debug mode (TDATTRIBUTES.DEBUG, bit 0):
// its memory and registers are readable by the host, so it proves nothing.
func (r *TDReport) Debug() bool { return r.TDAttributes[0]&0x01 != 0 }

// EnclaveReport is an SGX report body; in a quote it is the Quoting
// Enclave's report.
type EnclaveReport struct {
	CPUSVN     [16]byte
	MiscSelect uint32
	Attributes [16]byte
	MREnclave  [32]byte
	MRSigner   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData [64]byte
	raw        [EnclaveReportSize]byte
}

// Raw returns the 384 bytes the QE report signature covers.
func (e *EnclaveReport) Raw() []byte { return e.raw[:] }

// Quote is a parsed TDX quote.
type Quote struct {
	Header Header
	// BodyType is BodyTypeTD10 or BodyTypeTD15. Version 4 quotes always
	// carry a TD 1.0 body.
	BodyType uint16
	Body     TDReport

	Signature         [SignatureSize]byte // over SignedBytes, by AttestKey
	AttestKey         [AttestKeySize]byte
	QEReport          EnclaveReport
	QEReportSignature [SignatureSize]byte // over QEReport, by the PCK key
	QEAuthData        []byte
	// PCKChainPEM is the PCK leaf, the PCK platform/processor CA and the
	// root, as PEM, exactly as carried (it may end in a NUL byte).
	PCKChainPEM []byte

	signed []byte // header and body as they appear in the input
}

// SignedBytes returns the bytes the attestation key signs: the header and
// the body (for v5, with its type and size fields).
func (q *Quote) SignedBytes() []byte {
	if q.signed != nil {
		return q.signed
	}
	return q.marshalSigned()
}

// ParseQuote parses a TDX quote of version 4 or 5.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > MaxQuoteSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(b), MaxQuoteSize)
	}
	r := reader{b: b}
	q := &Quote{}
	h := &q.Header
	h.Version = r.u16()
	h.AttestKeyType = r.u16()
	h.TEEType = r.u32()
	h.QESVN = r.u16()
	h.PCESVN = r.u16()
	r.copy(h.QEVendorID[:])
	r.copy(h.UserData[:])
	if r.err != nil {
		return nil, r.fail("header")
	}
	if h.TEEType != TEETypeTDX {
		return nil, fmt.Errorf("%w: TEE type %#x, want %#x (TDX)", ErrMalformed, h.TEEType, TEETypeTDX)
	}
	if h.AttestKeyType != AttestKeyTypeECDSA {
		return nil, fmt.Errorf("%w: attestation key type %d, want %d (ECDSA P-256)", ErrMalformed, h.AttestKeyType, AttestKeyTypeECDSA)
	}
	bodySize := TD10ReportSize
	switch h.Version {
	case 4:
		q.BodyType = BodyTypeTD10
	case 5:
		q.BodyType = r.u16()
		size := r.u32()
		switch {
		case r.err != nil:
			return nil, r.fail("body descriptor")
		case q.BodyType == BodyTypeTD10 && size == TD10ReportSize:
		case q.BodyType == BodyTypeTD15 && size == TD15ReportSize:
			bodySize = TD15ReportSize
		default:
			return nil, fmt.Errorf("%w: v5 body type %d with size %d", ErrMalformed, q.BodyType, size)
		}
	default:
		return nil, fmt.Errorf("%w: version %d, want 4 or 5", ErrMalformed, h.Version)
	}
	body := r.next(bodySize)
	if r.err != nil {
		return nil, r.fail("report body")
	}
	q.Body = decodeTDReport(body)
	q.signed = b[:r.off:r.off]

	sigLen := r.u32()
	sig := reader{b: r.next(int(sigLen))}
	if r.err != nil {
		return nil, r.fail("signature data")
	}
	for _, x := range r.rest() {
		if x != 0 {
			return nil, fmt.Errorf("%w: non-zero bytes after the signature data", ErrMalformed)
		}
	}
	if err := q.parseSignatureData(&sig); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *Quote) parseSignatureData(r *reader) error {
	r.copy(q.Signature[:])
	r.copy(q.AttestKey[:])
	certType := r.u16()
	certData := reader{b: r.next(int(r.u32()))}
	if r.err != nil {
		return r.fail("signature data")
	}
	if certType != CertDataQEReport {
		return fmt.Errorf("%w: certification data type %d, want %d (QE report)", ErrMalformed, certType, CertDataQEReport)
	}
	if len(r.rest()) != 0 {
		return fmt.Errorf("%w: %d unexpected bytes after the certification data", ErrMalformed, len(r.rest()))
	}
	cd := &certData
	q.QEReport = decodeEnclaveReport(cd.next(EnclaveReportSize))
	cd.copy(q.QEReportSignature[:])
	q.QEAuthData = cd.clone(int(cd.u16()))
	innerType := cd.u16()
	q.PCKChainPEM = cd.clone(int(cd.u32()))
	if cd.err != nil {
		return cd.fail("QE certification data")
	}
	if innerType != CertDataPCKChainPEM {
		return fmt.Errorf("%w: inner certification data type %d, want %d (PCK chain)", ErrMalformed, innerType, CertDataPCKChainPEM)
	}
	if len(cd.rest()) != 0 {
		return fmt.Errorf("%w: %d unexpected bytes after the PCK chain", ErrMalformed, len(cd.rest()))
	}
	return nil
}

func decodeTDReport(b []byte) TDReport {
	var t TDReport
	r := reader{b: b}
	r.copy(t.TEETCBSVN[:])
	r.copy(t.MRSEAM[:])
	r.copy(t.MRSignerSEAM[:])
	r.copy(t.SEAMAttributes[:])
	r.copy(t.TDAttributes[:])
	r.copy(t.XFAM[:])
	r.copy(t.MRTD[:])
	r.copy(t.MRConfigID[:])
	r.copy(t.MROwner[:])
	r.copy(t.MROwnerConfig[:])
	for i := range t.RTMR {
		r.copy(t.RTMR[i][:])
	}
	r.copy(t.ReportData[:])
	if len(b) == TD15ReportSize {
		r.copy(t.TEETCBSVN2[:])
		r.copy(t.MRServiceTD[:])
	}
	return t
}

func decodeEnclaveReport(b []byte) EnclaveReport {
	var e EnclaveReport
	copy(e.raw[:], b)
	r := reader{b: e.raw[:]}
	r.copy(e.CPUSVN[:])
	e.MiscSelect = r.u32()
	r.skip(28)
	r.copy(e.Attributes[:])
	r.copy(e.MREnclave[:])
	r.skip(32)
	r.copy(e.MRSigner[:])
	r.skip(96)
	e.ISVProdID = r.u16()
	e.ISVSVN = r.u16()
	r.skip(60)
	r.copy(e.ReportData[:])
	return e
}

// reader is a bounds-checked little-endian cursor. After the first short
// read every call returns zero values and err stays set, so parsers check
// once per section instead of after every field.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) next(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.off {
		if r.err == nil {
			r.err = fmt.Errorf("need %d bytes at offset %d, have %d", n, r.off, len(r.b)-r.off)
		}
		if n >= 0 && n <= 8 {
			return make([]byte, n) // lets u16/u32 decode a zero
		}
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *reader) u16() uint16        { return binary.LittleEndian.Uint16(r.next(2)) }
func (r *reader) u32() uint32        { return binary.LittleEndian.Uint32(r.next(4)) }
func (r *reader) copy(dst []byte)    { copy(dst, r.next(len(dst))) }
func (r *reader) skip(n int)         { r.next(n) }
func (r *reader) clone(n int) []byte { return append([]byte(nil), r.next(n)...) }
func (r *reader) rest() []byte       { return r.b[min(r.off, len(r.b)):] }
func (r *reader) fail(what string) error {
	return fmt.Errorf("%w: truncated %s: %v", ErrMalformed, what, r.err)
}
