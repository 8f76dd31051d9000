package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/teesql/ratls/tdx"
)

// Names the test PKI writes into its certificates. The Intel common names
// are kept on the intermediate, leaf and TCB signing certificates because
// verifiers select the CA type ("platform" or "processor") and check roles
// by them; the organization always says TEST.
const (
	TestRootName      = "ratls TEST SGX Root CA - NOT INTEL, NEVER TRUST"
	TestOrganization  = "ratls TEST PKI - NOT INTEL, NEVER TRUST"
	IntelRootName     = "Intel SGX Root CA"
	PlatformCAName    = "Intel SGX PCK Platform CA"
	ProcessorCAName   = "Intel SGX PCK Processor CA"
	PCKCertName       = "Intel SGX PCK Certificate"
	TCBSigningName    = "Intel SGX TCB Signing"
	crlHost           = "https://ratls-test-pki.invalid"
	rootCRLPath       = "/IntelSGXRootCA.der"
	pckCRLPathFormat  = "/sgx/certification/v4/pckcrl?ca=%s&encoding=der"
	defaultTCBEvalNum = 17
)

// Defaults used when the corresponding Options field is zero. They resemble
// a real 5th-generation Xeon platform and Intel's TD Quoting Enclave, so
// that code tuned on real quotes sees familiar values.
var (
	DefaultFMSPC     = [6]byte{0x90, 0xC0, 0x6F, 0x00, 0x00, 0x00}
	DefaultCPUSVN    = [16]byte{3, 3, 2, 2, 4, 1, 0, 5}
	DefaultPCESVN    = uint16(11)
	DefaultTEETCBSVN = [16]byte{6, 1, 3} // TDX module SVN 6, major version 1, late microcode 3
)

// ErrOptions is returned (wrapped) for options the test PKI cannot honour.
var ErrOptions = errors.New("testpki: invalid options")

// CAType selects the CA that issues the PCK certificate.
type CAType int

const (
	// PlatformCA issues PCK certificates as "Intel SGX PCK Platform CA"
	// (multi-package platforms; what TDX hosts use). PCK CRL: ca=platform.
	PlatformCA CAType = iota
	// ProcessorCA issues PCK certificates as "Intel SGX PCK Processor CA".
	// PCK CRL: ca=processor.
	ProcessorCA
)

// String returns the PCS query value: "platform" or "processor".
func (c CAType) String() string {
	if c == ProcessorCA {
		return "processor"
	}
	return "platform"
}

func (c CAType) commonName() string {
	if c == ProcessorCA {
		return ProcessorCAName
	}
	return PlatformCAName
}

// Options configures New. The zero Options give a platform-CA authority
// whose quotes verify as UpToDate against its default collateral.
type Options struct {
	// Now is the authority's clock. Every date it writes (certificate
	// validity, issue and next-update dates of collateral and CRLs, TCB
	// dates) derives from it, so a test that sets Now gets the same
	// documents every run except for keys and signatures. Zero: the time
	// New runs, truncated to the second.
	Now time.Time
	// CA selects the CA issuing the PCK certificate. Zero: PlatformCA.
	CA CAType
	// IntelRootName gives the root Intel's exact common name "Intel SGX
	// Root CA" instead of TestRootName, for verifiers that check the name
	// literally (go-tdx-guest). The organization still reads
	// TestOrganization and the key is still fresh and trusted by nobody.
	IntelRootName bool
	// FMSPC is the platform's FMSPC, written into the PCK certificate.
	// Zero: DefaultFMSPC.
	FMSPC [6]byte
	// PCEID is the PCE ID in the PCK certificate. Zero is Intel's only
	// PCE ID, 0000.
	PCEID [2]byte
	// CPUSVN holds the 16 SGX TCB component SVNs of the platform, written
	// into the PCK certificate and the QE report. Zero: DefaultCPUSVN.
	CPUSVN [16]byte
	// PCESVN is the PCE SVN in the PCK certificate. Zero: DefaultPCESVN.
	PCESVN uint16
	// TEETCBSVN is the TDX TCB of the platform: what DefaultBody puts in
	// quotes and what the default TCB levels and TDX module identities
	// match. Zero: DefaultTEETCBSVN.
	TEETCBSVN [16]byte
	// QE describes the Quoting Enclave. Nil: DefaultQE().
	QE *QE
	// ModifyPCK, if set, is called on the PCK leaf certificate template
	// before it is signed: change validity, extensions, names, to build
	// certificates a verifier must reject.
	ModifyPCK func(template *x509.Certificate)
}

// Authority is a test DCAP PKI: root CA, PCK CA, PCK leaf, TCB signing
// certificate and a Quoting Enclave with its attestation key. It is
// immutable after New and safe for concurrent use.
type Authority struct {
	now       time.Time
	ca        CAType
	fmspc     [6]byte
	pceID     [2]byte
	cpuSVN    [16]byte
	pceSVN    uint16
	teeTCBSVN [16]byte
	ppid      [16]byte
	qe        QE

	root, pckCA, pck, tcbSigning             *x509.Certificate
	rootKey, pckCAKey, pckKey, tcbSigningKey *ecdsa.PrivateKey
	attestKey                                *ecdsa.PrivateKey

	qeReport    tdx.EnclaveReport
	qeReportSig [tdx.SignatureSize]byte
}

// New creates an authority with fresh P-256 keys.
func New(opts Options) (*Authority, error) {
	a := &Authority{
		now:       opts.Now,
		ca:        opts.CA,
		fmspc:     orDefault(opts.FMSPC, DefaultFMSPC),
		pceID:     opts.PCEID,
		cpuSVN:    orDefault(opts.CPUSVN, DefaultCPUSVN),
		pceSVN:    opts.PCESVN,
		teeTCBSVN: orDefault(opts.TEETCBSVN, DefaultTEETCBSVN),
		ppid:      [16]byte(derive("PPID", 16)),
	}
	if a.now.IsZero() {
		a.now = time.Now()
	}
	a.now = a.now.UTC().Truncate(time.Second)
	if a.ca != PlatformCA && a.ca != ProcessorCA {
		return nil, fmt.Errorf("%w: CA type %d", ErrOptions, a.ca)
	}
	if a.pceSVN == 0 {
		a.pceSVN = DefaultPCESVN
	}
	a.qe = DefaultQE()
	if opts.QE != nil {
		a.qe = *opts.QE
		a.qe.AuthData = append([]byte(nil), opts.QE.AuthData...)
	}
	if len(a.qe.AuthData) > 0xffff {
		return nil, fmt.Errorf("%w: QE auth data of %d bytes exceeds 65535", ErrOptions, len(a.qe.AuthData))
	}

	keys := []**ecdsa.PrivateKey{&a.rootKey, &a.pckCAKey, &a.pckKey, &a.tcbSigningKey, &a.attestKey}
	for _, k := range keys {
		var err error
		if *k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("testpki: generating key: %w", err)
		}
	}
	if err := a.issueCertificates(opts); err != nil {
		return nil, err
	}
	if err := a.buildQEReport(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Authority) issueCertificates(opts Options) error {
	rootCN := TestRootName
	if opts.IntelRootName {
		rootCN = IntelRootName
	}
	rootCRL := crlHost + rootCRLPath
	day := 24 * time.Hour
	year := 365 * day

	rootTmpl := a.caTemplate(rootCN, &a.rootKey.PublicKey, a.now.Add(-year), a.now.Add(25*year), 1, rootCRL)
	rootTmpl.AuthorityKeyId = rootTmpl.SubjectKeyId // Intel's root names itself as its authority
	var err error
	if a.root, err = sign(rootTmpl, rootTmpl, &a.rootKey.PublicKey, a.rootKey); err != nil {
		return err
	}

	caTmpl := a.caTemplate(a.ca.commonName(), &a.pckCAKey.PublicKey, a.now.Add(-year), a.now.Add(15*year), 0, rootCRL)
	if a.pckCA, err = sign(caTmpl, a.root, &a.pckCAKey.PublicKey, a.rootKey); err != nil {
		return err
	}

	tcbTmpl := a.leafTemplate(TCBSigningName, &a.tcbSigningKey.PublicKey, a.now.Add(-year), a.now.Add(7*year), rootCRL)
	if a.tcbSigning, err = sign(tcbTmpl, a.root, &a.tcbSigningKey.PublicKey, a.rootKey); err != nil {
		return err
	}

	sgxExt, err := a.pckExtensions().marshal()
	if err != nil {
		return err
	}
	pckTmpl := a.leafTemplate(PCKCertName, &a.pckKey.PublicKey, a.now.Add(-30*day), a.now.Add(7*year),
		crlHost+fmt.Sprintf(pckCRLPathFormat, a.ca))
	pckTmpl.ExtraExtensions = []pkix.Extension{{Id: OIDSGXExtension, Value: sgxExt}}
	if opts.ModifyPCK != nil {
		opts.ModifyPCK(pckTmpl)
	}
	if a.pck, err = sign(pckTmpl, a.pckCA, &a.pckKey.PublicKey, a.pckCAKey); err != nil {
		return err
	}
	return nil
}

func (a *Authority) caTemplate(cn string, pub *ecdsa.PublicKey, notBefore, notAfter time.Time, pathLen int, crl string) *x509.Certificate {
	t := a.leafTemplate(cn, pub, notBefore, notAfter, crl)
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	t.IsCA = true
	t.MaxPathLen = pathLen
	t.MaxPathLenZero = pathLen == 0
	return t
}

// leafTemplate mirrors Intel's end-entity profile: digitalSignature and
// nonRepudiation, CA:FALSE, a CRL distribution point, key identifiers and
// no extended key usage. With the SGX extension that is exactly the six
// extensions go-tdx-guest requires of a PCK certificate.
func (a *Authority) leafTemplate(cn string, pub *ecdsa.PublicKey, notBefore, notAfter time.Time, crl string) *x509.Certificate {
	spki, _ := x509.MarshalPKIXPublicKey(pub) // a P-256 key always marshals
	serial := sha256.Sum256(spki)
	ski := sha1.Sum(ecdhBytes(pub))
	return &x509.Certificate{
		// Derived from the key: unique per certificate, stable for a key.
		SerialNumber:          new(big.Int).SetBytes(serial[:16]),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{TestOrganization}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          ski[:],
		CRLDistributionPoints: []string{crl},
		SignatureAlgorithm:    x509.ECDSAWithSHA256,
	}
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("testpki: issuing %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// Now returns the authority's clock: verify its quotes and collateral at
// this time.
func (a *Authority) Now() time.Time { return a.now }

// CA returns the type of the CA that issued the PCK certificate.
func (a *Authority) CA() CAType { return a.ca }

// Root returns the test root CA certificate. Danger: pin it only in tests.
func (a *Authority) Root() *x509.Certificate { return a.root }

// RootPool returns a new pool holding only the test root.
func (a *Authority) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.root)
	return p
}

// PCKCA returns the PCK platform or processor CA certificate.
func (a *Authority) PCKCA() *x509.Certificate { return a.pckCA }

// PCK returns the PCK leaf certificate, the key of which signs QE reports.
func (a *Authority) PCK() *x509.Certificate { return a.pck }

// TCBSigning returns the certificate that signs TCB info and QE identity.
func (a *Authority) TCBSigning() *x509.Certificate { return a.tcbSigning }

// PCKChainPEM returns the PCK leaf, the PCK CA and the root, as PEM, in the
// order a quote carries them.
func (a *Authority) PCKChainPEM() []byte { return pemChain(a.pck, a.pckCA, a.root) }

// FMSPC returns the platform's FMSPC.
func (a *Authority) FMSPC() [6]byte { return a.fmspc }

// FMSPCHex returns the FMSPC as upper-case hex, as Intel PCS writes it.
func (a *Authority) FMSPCHex() string { return strings.ToUpper(hex.EncodeToString(a.fmspc[:])) }

// TEETCBSVN returns the platform's TDX TCB SVN (see Options.TEETCBSVN).
func (a *Authority) TEETCBSVN() [16]byte { return a.teeTCBSVN }

// AttestationKey returns the QE's attestation public key, the key that
// signs quotes and that the QE report vouches for.
func (a *Authority) AttestationKey() *ecdsa.PublicKey { return &a.attestKey.PublicKey }

func pemChain(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ecdhBytes returns the uncompressed point 04||X||Y.
func ecdhBytes(pub *ecdsa.PublicKey) []byte {
	k, err := pub.ECDH()
	if err != nil {
		panic("testpki: P-256 key without ECDH form: " + err.Error()) // keys are generated here
	}
	return k.Bytes()
}

// derive returns n deterministic bytes labelled by what, for identifiers
// that only need to look realistic (PPID, MRSEAM, ...).
func derive(what string, n int) []byte {
	var out []byte
	for i := byte(0); len(out) < n; i++ {
		h := sha256.Sum256(append([]byte("ratls testpki "+what), i))
		out = append(out, h[:]...)
	}
	return out[:n]
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
