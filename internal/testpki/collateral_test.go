package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

func recordedCollateral(t *testing.T) *dcap.Collateral {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/dcap-qvl/tdx_quote_collateral.json")
	require.NoError(t, err)
	var c dcap.Collateral
	require.NoError(t, json.Unmarshal(raw, &c))
	return &c
}

// keys returns the keys of a JSON object in document order.
func keys(t *testing.T, obj json.RawMessage) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var out []string
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		out = append(out, k.(string))
		var skip json.RawMessage
		require.NoError(t, dec.Decode(&skip))
	}
	return out
}

func field(t *testing.T, obj json.RawMessage, path ...any) json.RawMessage {
	t.Helper()
	for _, p := range path {
		switch p := p.(type) {
		case string:
			var m map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(obj, &m))
			obj = m[p]
		case int:
			var a []json.RawMessage
			require.NoError(t, json.Unmarshal(obj, &a))
			require.Greater(t, len(a), p)
			obj = a[p]
		}
	}
	return obj
}

func TestCollateralMatchesRecordedStructure(t *testing.T) {
	t.Parallel()
	rec := recordedCollateral(t)
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)

	recTCB, ourTCB := json.RawMessage(rec.TCBInfo), json.RawMessage(c.TCBInfo)
	for _, path := range [][]any{
		{},
		{"tdxModule"},
		{"tdxModuleIdentities", 0},
		{"tdxModuleIdentities", 0, "tcbLevels", 0},
		{"tdxModuleIdentities", 0, "tcbLevels", 0, "tcb"},
		{"tcbLevels", 0},
		{"tcbLevels", 0, "tcb"},
		{"tcbLevels", 0, "tcb", "sgxtcbcomponents", 0},
		{"tcbLevels", 0, "tcb", "tdxtcbcomponents", 0},
		{"tcbLevels", 1}, // with advisoryIDs
	} {
		assert.Equal(t, keys(t, field(t, recTCB, path...)), keys(t, field(t, ourTCB, path...)), "tcbInfo %v", path)
	}
	recQE, ourQE := json.RawMessage(rec.QEIdentity), json.RawMessage(c.QEIdentity)
	for _, path := range [][]any{{}, {"tcbLevels", 0}, {"tcbLevels", 0, "tcb"}} {
		assert.Equal(t, keys(t, field(t, recQE, path...)), keys(t, field(t, ourQE, path...)), "enclaveIdentity %v", path)
	}
	assert.Len(t, c.TCBInfoSignature, len(rec.TCBInfoSignature))
	assert.Len(t, c.QEIdentitySignature, len(rec.QEIdentitySignature))
	var lv struct {
		TCB struct {
			SGX []json.RawMessage `json:"sgxtcbcomponents"`
			TDX []json.RawMessage `json:"tdxtcbcomponents"`
		} `json:"tcb"`
	}
	require.NoError(t, json.Unmarshal(field(t, ourTCB, "tcbLevels", 0), &lv))
	assert.Len(t, lv.TCB.SGX, 16)
	assert.Len(t, lv.TCB.TDX, 16)
	// Compact, like Intel's.
	for _, doc := range []string{c.TCBInfo, c.QEIdentity} {
		var buf bytes.Buffer
		require.NoError(t, json.Compact(&buf, []byte(doc)))
		assert.Equal(t, buf.String(), doc)
	}
}

func pemCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
	require.Empty(t, bytes.TrimSpace(rest))
	return out
}

func verifyRawHex(t *testing.T, c *x509.Certificate, msg []byte, sigHex string) bool {
	t.Helper()
	sig, err := hex.DecodeString(sigHex)
	require.NoError(t, err)
	require.Len(t, sig, 64)
	h := sha256.Sum256(msg)
	return ecdsa.Verify(c.PublicKey.(*ecdsa.PublicKey), h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

func TestCollateralSignaturesAndChains(t *testing.T) {
	t.Parallel()
	for _, ca := range []CAType{PlatformCA, ProcessorCA} {
		a := newAuthority(t, Options{Now: testNow, CA: ca})
		c, err := a.Collateral(CollateralOptions{})
		require.NoError(t, err)

		for _, chain := range []string{c.TCBInfoIssuerChain, c.QEIdentityIssuerChain} {
			certs := pemCerts(t, chain)
			require.Len(t, certs, 2)
			assert.True(t, certs[0].Equal(a.TCBSigning()))
			assert.True(t, certs[1].Equal(a.Root()))
		}
		assert.True(t, verifyRawHex(t, a.TCBSigning(), []byte(c.TCBInfo), c.TCBInfoSignature))
		assert.True(t, verifyRawHex(t, a.TCBSigning(), []byte(c.QEIdentity), c.QEIdentitySignature))
		assert.False(t, verifyRawHex(t, a.TCBSigning(), []byte(c.TCBInfo+" "), c.TCBInfoSignature))

		pckChain := pemCerts(t, c.PCKCRLIssuerChain)
		require.Len(t, pckChain, 2)
		assert.True(t, pckChain[0].Equal(a.PCKCA()))
		assert.True(t, pckChain[1].Equal(a.Root()))

		pckCRL := parseCRL(t, c.PCKCRL)
		require.NoError(t, pckCRL.CheckSignatureFrom(a.PCKCA()))
		assert.Equal(t, a.PCKCA().Subject.String(), pckCRL.Issuer.String())
		assert.Empty(t, pckCRL.RevokedCertificateEntries)
		rootCRL := parseCRL(t, c.RootCACRL)
		require.NoError(t, rootCRL.CheckSignatureFrom(a.Root()))
		assert.Empty(t, rootCRL.RevokedCertificateEntries)

		issue := testNow.Add(-24 * time.Hour)
		assert.Equal(t, issue, pckCRL.ThisUpdate)
		assert.Equal(t, issue.AddDate(0, 0, 30), pckCRL.NextUpdate)
		assert.Equal(t, issue.AddDate(0, 0, 365), rootCRL.NextUpdate)
		var doc struct {
			IssueDate, NextUpdate time.Time
			FMSPC                 string `json:"fmspc"`
			PCEID                 string `json:"pceId"`
		}
		require.NoError(t, json.Unmarshal([]byte(c.TCBInfo), &doc))
		assert.Equal(t, issue, doc.IssueDate)
		assert.Equal(t, issue.AddDate(0, 0, 30), doc.NextUpdate)
		assert.Equal(t, a.FMSPCHex(), doc.FMSPC)
		assert.Equal(t, "0000", doc.PCEID)
	}
}

func parseCRL(t *testing.T, hexDER string) *x509.RevocationList {
	t.Helper()
	der, err := hex.DecodeString(hexDER)
	require.NoError(t, err)
	crl, err := x509.ParseRevocationList(der)
	require.NoError(t, err)
	return crl
}

func TestCollateralRevocation(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	serials := func(crl *x509.RevocationList) []string {
		var out []string
		for _, e := range crl.RevokedCertificateEntries {
			out = append(out, e.SerialNumber.String())
			assert.Equal(t, 1, e.ReasonCode)
		}
		return out
	}
	c, err := a.Collateral(CollateralOptions{RevokePCK: true})
	require.NoError(t, err)
	assert.Equal(t, []string{a.PCK().SerialNumber.String()}, serials(parseCRL(t, c.PCKCRL)))
	assert.Empty(t, serials(parseCRL(t, c.RootCACRL)))

	c, err = a.Collateral(CollateralOptions{RevokePCKCA: true, RevokeTCBSigning: true})
	require.NoError(t, err)
	assert.Empty(t, serials(parseCRL(t, c.PCKCRL)))
	assert.Equal(t, []string{a.PCKCA().SerialNumber.String(), a.TCBSigning().SerialNumber.String()}, serials(parseCRL(t, c.RootCACRL)))
}

type tcbInfoView struct {
	IssueDate   time.Time `json:"issueDate"`
	NextUpdate  time.Time `json:"nextUpdate"`
	FMSPC       string    `json:"fmspc"`
	EvalNum     int       `json:"tcbEvaluationDataNumber"`
	TDXModuleID []struct {
		ID        string `json:"id"`
		TCBLevels []struct {
			TCB struct {
				ISVSVN int `json:"isvsvn"`
			} `json:"tcb"`
			Status string `json:"tcbStatus"`
		} `json:"tcbLevels"`
	} `json:"tdxModuleIdentities"`
	TCBLevels []struct {
		TCB struct {
			SGX    []struct{ SVN byte } `json:"sgxtcbcomponents"`
			PCESVN uint16               `json:"pcesvn"`
			TDX    []struct{ SVN byte } `json:"tdxtcbcomponents"`
		} `json:"tcb"`
		Date     time.Time `json:"tcbDate"`
		Status   string    `json:"tcbStatus"`
		Advisory []string  `json:"advisoryIDs"`
	} `json:"tcbLevels"`
}

func tcbInfo(t *testing.T, c *dcap.Collateral) tcbInfoView {
	t.Helper()
	var v tcbInfoView
	require.NoError(t, json.Unmarshal([]byte(c.TCBInfo), &v))
	return v
}

func svns(cs []struct{ SVN byte }) [16]byte {
	var out [16]byte
	for i, c := range cs {
		out[i] = c.SVN
	}
	return out
}

func TestCollateralKnobs(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})

	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	v := tcbInfo(t, c)
	require.Len(t, v.TCBLevels, 2)
	assert.Equal(t, "UpToDate", v.TCBLevels[0].Status)
	assert.Empty(t, v.TCBLevels[0].Advisory)
	assert.Equal(t, DefaultCPUSVN, svns(v.TCBLevels[0].TCB.SGX))
	assert.Equal(t, DefaultPCESVN, v.TCBLevels[0].TCB.PCESVN)
	assert.Equal(t, DefaultTEETCBSVN, svns(v.TCBLevels[0].TCB.TDX))
	assert.Equal(t, "OutOfDate", v.TCBLevels[1].Status)
	assert.Equal(t, time.Date(2025, 3, 27, 0, 0, 0, 0, time.UTC), v.TCBLevels[0].Date)
	assert.Equal(t, 17, v.EvalNum)
	require.Len(t, v.TDXModuleID, 1)
	assert.Equal(t, "TDX_01", v.TDXModuleID[0].ID)
	assert.Equal(t, 6, v.TDXModuleID[0].TCBLevels[0].TCB.ISVSVN)
	assert.Equal(t, "UpToDate", v.TDXModuleID[0].TCBLevels[0].Status)

	c, err = a.Collateral(CollateralOptions{TCBStatus: tdx.TCBSWHardeningNeeded, AdvisoryIDs: []string{"INTEL-SA-00615"}, TCBEvaluationDataNumber: 19})
	require.NoError(t, err)
	v = tcbInfo(t, c)
	assert.Equal(t, "SWHardeningNeeded", v.TCBLevels[0].Status)
	assert.Equal(t, []string{"INTEL-SA-00615"}, v.TCBLevels[0].Advisory)
	assert.Equal(t, 19, v.EvalNum)

	levels := []TCBLevel{{SGXComponents: [16]byte{99}, PCESVN: 1, Status: tdx.TCBRevoked, Date: testNow}}
	c, err = a.Collateral(CollateralOptions{TCBLevels: levels, TCBStatus: tdx.TCBUpToDate})
	require.NoError(t, err)
	v = tcbInfo(t, c)
	require.Len(t, v.TCBLevels, 1)
	assert.Equal(t, "Revoked", v.TCBLevels[0].Status, "TCBStatus applies only to the default levels")
	assert.Equal(t, byte(99), v.TCBLevels[0].TCB.SGX[0].SVN)
	assert.Equal(t, testNow, v.TCBLevels[0].Date)

	c, err = a.Collateral(CollateralOptions{LowercaseFMSPC: true})
	require.NoError(t, err)
	assert.Equal(t, strings.ToLower(a.FMSPCHex()), tcbInfo(t, c).FMSPC)
	c, err = a.Collateral(CollateralOptions{FMSPC: "00606A000000"})
	require.NoError(t, err)
	assert.Equal(t, "00606A000000", tcbInfo(t, c).FMSPC)

	c, err = a.Collateral(CollateralOptions{Expired: true})
	require.NoError(t, err)
	v = tcbInfo(t, c)
	assert.True(t, v.NextUpdate.Before(a.Now()))
	assert.True(t, parseCRL(t, c.PCKCRL).NextUpdate.Before(a.Now()))
	assert.True(t, parseCRL(t, c.RootCACRL).NextUpdate.Before(a.Now()))
	var qe struct{ NextUpdate time.Time }
	require.NoError(t, json.Unmarshal([]byte(c.QEIdentity), &qe))
	assert.True(t, qe.NextUpdate.Before(a.Now()))

	issue := testNow.AddDate(0, -1, 0)
	c, err = a.Collateral(CollateralOptions{IssueDate: issue, NextUpdate: issue.AddDate(0, 0, 7), RootCRLNextUpdate: issue.AddDate(1, 0, 0)})
	require.NoError(t, err)
	v = tcbInfo(t, c)
	assert.Equal(t, issue, v.IssueDate)
	assert.Equal(t, issue.AddDate(0, 0, 7), v.NextUpdate)
	assert.Equal(t, issue.AddDate(1, 0, 0), parseCRL(t, c.RootCACRL).NextUpdate)

	ids := []TDXModuleIdentity{}
	c, err = a.Collateral(CollateralOptions{TDXModuleIdentities: ids})
	require.NoError(t, err)
	assert.Contains(t, c.TCBInfo, `"tdxModuleIdentities":[]`)
}

func TestCollateralRewrite(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{
		RewriteTCBInfo:    func(b []byte) []byte { return bytes.Replace(b, []byte(`"version":3`), []byte(`"version":2`), 1) },
		RewriteQEIdentity: func(b []byte) []byte { return bytes.Replace(b, []byte(`"TD_QE"`), []byte(`"QE"`), 1) },
	})
	require.NoError(t, err)
	assert.Contains(t, c.TCBInfo, `"version":2`)
	assert.Contains(t, c.QEIdentity, `"id":"QE"`)
	assert.True(t, verifyRawHex(t, a.TCBSigning(), []byte(c.TCBInfo), c.TCBInfoSignature), "rewritten text is what is signed")
	assert.True(t, verifyRawHex(t, a.TCBSigning(), []byte(c.QEIdentity), c.QEIdentitySignature))
}

func TestQEIdentityMatchesQE(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow})
	c, err := a.Collateral(CollateralOptions{})
	require.NoError(t, err)
	var id struct {
		ID             string `json:"id"`
		Version        int    `json:"version"`
		MiscSelect     string `json:"miscselect"`
		MiscSelectMask string `json:"miscselectMask"`
		Attributes     string `json:"attributes"`
		AttributesMask string `json:"attributesMask"`
		MRSigner       string `json:"mrsigner"`
		ISVProdID      uint16 `json:"isvprodid"`
		TCBLevels      []struct {
			TCB    struct{ ISVSVN uint16 } `json:"tcb"`
			Status string                  `json:"tcbStatus"`
		} `json:"tcbLevels"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.QEIdentity), &id))
	// Same values as Intel's TD QE identity in the recorded collateral.
	assert.Equal(t, "TD_QE", id.ID)
	assert.Equal(t, 2, id.Version)
	assert.Equal(t, "00000000", id.MiscSelect)
	assert.Equal(t, "FFFFFFFF", id.MiscSelectMask)
	assert.Equal(t, "11000000000000000000000000000000", id.Attributes)
	assert.Equal(t, "FBFFFFFFFFFFFFFF0000000000000000", id.AttributesMask)
	assert.Equal(t, "DC9E2A7C6F948F17474E34A7FC43ED030F7C1563F1BABDDF6340C82E0E54A8C5", id.MRSigner)
	assert.Equal(t, uint16(2), id.ISVProdID)
	assert.Equal(t, a.QE().ISVSVN, id.TCBLevels[0].TCB.ISVSVN)
	assert.Equal(t, "UpToDate", id.TCBLevels[0].Status)

	bad := a.QEIdentity()
	bad.MRSigner[0] ^= 0xff
	c, err = a.Collateral(CollateralOptions{QEIdentity: &bad})
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(c.QEIdentity), &id))
	assert.NotEqual(t, "DC9E2A7C6F948F17474E34A7FC43ED030F7C1563F1BABDDF6340C82E0E54A8C5", id.MRSigner)
}
