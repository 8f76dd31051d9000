package testpki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/teesql/ratls/tdx"
)

// QE describes the Quoting Enclave whose report vouches for the
// attestation key.
type QE struct {
	MRSigner   [32]byte
	MREnclave  [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	MiscSelect uint32
	Attributes [16]byte
	// AuthData is the QE authentication data, hashed into the QE report
	// with the attestation key. At most 65535 bytes.
	AuthData []byte
}

// Intel's TD QE values, as found in real quotes.
var (
	intelQEMRSigner = mustHex32("DC9E2A7C6F948F17474E34A7FC43ED030F7C1563F1BABDDF6340C82E0E54A8C5")
	intelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
)

// DefaultQE returns a QE resembling Intel's TD Quoting Enclave: Intel's
// MRSIGNER, ISVPRODID 2, ISVSVN 6, MISCSELECT 0, ATTRIBUTES 0x15 (INIT,
// MODE64BIT, PROVISIONKEY) with XFRM 0xe7, and 32 bytes of auth data
// 00 01 .. 1f.
func DefaultQE() QE {
	q := QE{
		MRSigner:   intelQEMRSigner,
		MREnclave:  [32]byte(derive("QE MRENCLAVE", 32)),
		ISVProdID:  2,
		ISVSVN:     6,
		Attributes: [16]byte{0x15, 8: 0xe7},
		AuthData:   make([]byte, 32),
	}
	for i := range q.AuthData {
		q.AuthData[i] = byte(i)
	}
	return q
}

// QE returns the authority's Quoting Enclave description.
func (a *Authority) QE() QE {
	q := a.qe
	q.AuthData = append([]byte(nil), a.qe.AuthData...)
	return q
}

// buildQEReport makes the QE report that binds the attestation key:
// REPORTDATA = SHA-256(attestation key || QE auth data) || 32 zero bytes,
// signed by the PCK key.
func (a *Authority) buildQEReport() error {
	var rd [64]byte
	h := sha256.Sum256(append(attestKeyBytes(&a.attestKey.PublicKey), a.qe.AuthData...))
	copy(rd[:], h[:])
	a.qeReport = tdx.NewEnclaveReport(tdx.EnclaveReport{
		CPUSVN:     a.cpuSVN,
		MiscSelect: a.qe.MiscSelect,
		Attributes: a.qe.Attributes,
		MREnclave:  a.qe.MREnclave,
		MRSigner:   a.qe.MRSigner,
		ISVProdID:  a.qe.ISVProdID,
		ISVSVN:     a.qe.ISVSVN,
		ReportData: rd,
	})
	var err error
	a.qeReportSig, err = signRaw(a.pckKey, a.qeReport.Raw())
	return err
}

// attestKeyBytes returns the raw X||Y form quotes carry.
func attestKeyBytes(pub *ecdsa.PublicKey) []byte { return ecdhBytes(pub)[1:] }

// signRaw signs SHA-256(msg) and returns the signature as Intel writes it:
// r||s, each a 32-byte big-endian integer.
func signRaw(key *ecdsa.PrivateKey, msg []byte) ([64]byte, error) {
	var out [64]byte
	h := sha256.Sum256(msg)
	der, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		return out, fmt.Errorf("testpki: signing: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return out, fmt.Errorf("testpki: signing: %w", err)
	}
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

func mustHex32(s string) [32]byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		panic("testpki: bad constant " + s)
	}
	return [32]byte(b)
}
