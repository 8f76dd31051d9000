package testpki

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// go-tdx-guest is an independent implementation of Intel's rules: if it
// accepts what this package mints, the formats are right. It parses v4
// quotes only, accepts only TCB status UpToDate, compares the FMSPC case-
// sensitively with its own lower-case hex and checks Intel's certificate
// names literally (hence IntelRootName and LowercaseFMSPC below).

// pccsGetter serves go-tdx-guest's collateral requests (aimed at Intel's
// hosts) from a PCCS double, in process.
type pccsGetter struct{ h http.Handler }

func (g pccsGetter) Get(url string) (map[string][]string, []byte, error) {
	rec := httptest.NewRecorder()
	g.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	if rec.Code != http.StatusOK {
		return nil, nil, &httpError{url, rec.Code}
	}
	return rec.Header(), rec.Body.Bytes(), nil
}

type httpError struct {
	url  string
	code int
}

func (e *httpError) Error() string { return http.StatusText(e.code) + " from " + e.url }

func goTDXGuestVerify(t *testing.T, a *Authority, raw []byte, opts *verify.Options) error {
	t.Helper()
	pq, err := abi.QuoteToProto(raw)
	require.NoError(t, err)
	return verify.TdxQuote(pq, opts)
}

func TestGoTDXGuestAcceptsMintedQuote(t *testing.T) {
	t.Parallel()
	// go-tdx-guest knows only the platform CA as intermediate.
	a := newAuthority(t, Options{Now: testNow, IntelRootName: true})
	raw, err := a.MintQuote(QuoteOptions{})
	require.NoError(t, err)

	err = goTDXGuestVerify(t, a, raw, &verify.Options{TrustedRoots: a.RootPool(), Now: a.Now()})
	require.NoError(t, err)

	err = goTDXGuestVerify(t, a, raw, &verify.Options{Now: a.Now()})
	require.Error(t, err, "Intel's embedded root must not accept the test root")
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")
}

func TestGoTDXGuestRejectsDefects(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow, IntelRootName: true})
	for _, d := range []Defect{BadQuoteSignature, BadQEReportSignature, UnboundAttestationKey} {
		raw, err := a.MintQuote(QuoteOptions{Defect: d})
		require.NoError(t, err)
		err = goTDXGuestVerify(t, a, raw, &verify.Options{TrustedRoots: a.RootPool(), Now: a.Now()})
		assert.Error(t, err, "defect %d", d)
	}
}

func TestGoTDXGuestAcceptsMintedCollateral(t *testing.T) {
	t.Parallel()
	a := newAuthority(t, Options{Now: testNow, IntelRootName: true})
	raw, err := a.MintQuote(QuoteOptions{})
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		opts    CollateralOptions
		wantErr string // empty: accepted
	}{
		{"UpToDate", CollateralOptions{LowercaseFMSPC: true}, ""},
		{"upper-case FMSPC", CollateralOptions{}, "FMSPC from PCK Certificate"},
		{"OutOfDate", CollateralOptions{LowercaseFMSPC: true, TCBStatus: "OutOfDate"}, `found "OutOfDate"`},
		{"expired", CollateralOptions{LowercaseFMSPC: true, Expired: true}, "tcbInfo has expired"},
		{"PCK revoked", CollateralOptions{LowercaseFMSPC: true, RevokePCK: true}, "PCK Leaf certificate in PCK certificate chain was revoked"},
		{"PCK CA revoked", CollateralOptions{LowercaseFMSPC: true, RevokePCKCA: true}, "intermediate certificate in PCK certificate chain was revoked"},
		{"TCB signing revoked", CollateralOptions{LowercaseFMSPC: true, RevokeTCBSigning: true}, "signing certificate was revoked"},
		{"QE mismatch", CollateralOptions{LowercaseFMSPC: true, QEIdentity: func() *QEIdentity {
			q := a.QEIdentity()
			q.ISVProdID++
			return &q
		}()}, "ISV PRODID"},
		{"TDX module mismatch", CollateralOptions{LowercaseFMSPC: true, TDXModule: &TDXModule{MRSigner: [48]byte{1}}}, "MRSIGNERSEAM"},
		{"tampered TCB info", CollateralOptions{LowercaseFMSPC: true}, "ECDSA verification failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			coll, err := a.Collateral(tc.opts)
			require.NoError(t, err)
			if tc.name == "tampered TCB info" {
				coll.TCBInfo = coll.TCBInfo[:len(coll.TCBInfo)-1] + " }"
			}
			p, err := NewPCCS(coll)
			require.NoError(t, err)
			err = goTDXGuestVerify(t, a, raw, &verify.Options{
				TrustedRoots:     a.RootPool(),
				Now:              a.Now(),
				GetCollateral:    true,
				CheckRevocations: true,
				Getter:           pccsGetter{p},
			})
			if tc.wantErr == "" {
				require.NoError(t, err)
				// It really fetched everything from the double.
				for _, path := range []string{PathTCBInfo, PathQEIdentity, PathPCKCRL, PathRootCRLDER} {
					assert.Equal(t, int64(1), p.Requests(path), path)
				}
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}
