package dcap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/teesql/ratls/tdx"
)

// The TCB rules below follow Intel's Quote Verification Library (TDX
// quotes, TCB info v3, QE identity v2): match the QE against its identity,
// the TDX module against its identity, the platform against the TCB levels,
// then converge the three statuses into one.

// checkQEIdentity matches the QE report against Intel's QE identity and
// returns the QE TCB level its ISVSVN reaches.
func checkQEIdentity(id *QEIdentity, r *tdx.EnclaveReport) (*EnclaveTCBLevel, error) {
	mask := binary.LittleEndian.Uint32(id.MiscSelectMask)
	want := binary.LittleEndian.Uint32(id.MiscSelect)
	if got := r.MiscSelect & mask; got != want {
		return nil, fmt.Errorf("%w: MISCSELECT %08x masked with %08x is %08x, want %08x", ErrQEIdentity, r.MiscSelect, mask, got, want)
	}
	var attrs [16]byte
	for i := range attrs {
		attrs[i] = r.Attributes[i] & id.AttributesMask[i]
	}
	if !bytes.Equal(attrs[:], id.Attributes) {
		return nil, fmt.Errorf("%w: ATTRIBUTES %x masked with %x is %x, want %x", ErrQEIdentity, r.Attributes, []byte(id.AttributesMask), attrs, []byte(id.Attributes))
	}
	if !bytes.Equal(r.MRSigner[:], id.MRSigner) {
		return nil, fmt.Errorf("%w: MRSIGNER %x, want %x", ErrQEIdentity, r.MRSigner, []byte(id.MRSigner))
	}
	if r.ISVProdID != id.ISVProdID {
		return nil, fmt.Errorf("%w: ISVPRODID %d, want %d", ErrQEIdentity, r.ISVProdID, id.ISVProdID)
	}
	for i := range id.TCBLevels {
		if r.ISVSVN >= id.TCBLevels[i].TCB.ISVSVN {
			return &id.TCBLevels[i], nil
		}
	}
	return nil, fmt.Errorf("%w: QE ISVSVN %d is below every QE TCB level (lowest %d)", ErrQEIdentity, r.ISVSVN, id.TCBLevels[len(id.TCBLevels)-1].TCB.ISVSVN)
}

// checkTDXModule matches the TDX module that produced body against the TCB
// info: MRSIGNERSEAM and SEAMATTRIBUTES against tdxModule or, for a module
// whose major version TEE_TCB_SVN[1] is not zero (TDX 1.5 and later),
// against the matching tdxModuleIdentities entry, whose TCB levels then give
// the module's status. It returns nil for a version 0 module, which has no
// separate status.
func checkTDXModule(info *TCBInfo, body *tdx.TDReport) (*EnclaveTCBLevel, error) {
	version := body.TEETCBSVN[1]
	want := info.TDXModule
	var ident *TDXModuleIdentity
	if version > 0 {
		id := fmt.Sprintf("TDX_%02X", version)
		for i := range info.TDXModuleIdentities {
			if strings.EqualFold(info.TDXModuleIdentities[i].ID, id) {
				ident = &info.TDXModuleIdentities[i]
				break
			}
		}
		if ident == nil {
			return nil, fmt.Errorf("%w: TEE_TCB_SVN %x names module %s, which the TCB info does not list", ErrTDXModule, body.TEETCBSVN, id)
		}
		want = &ident.TDXModule
	}
	if !bytes.Equal(body.MRSignerSEAM[:], want.MRSigner) {
		return nil, fmt.Errorf("%w: MRSIGNERSEAM %x, want %x", ErrTDXModule, body.MRSignerSEAM, []byte(want.MRSigner))
	}
	var attrs [8]byte
	for i := range attrs {
		attrs[i] = body.SEAMAttributes[i] & want.AttributesMask[i]
	}
	if !bytes.Equal(attrs[:], want.Attributes) {
		return nil, fmt.Errorf("%w: SEAMATTRIBUTES %x masked with %x is %x, want %x", ErrTDXModule, body.SEAMAttributes, []byte(want.AttributesMask), attrs, []byte(want.Attributes))
	}
	if ident == nil {
		return nil, nil
	}
	svn := uint16(body.TEETCBSVN[0])
	for i := range ident.TCBLevels {
		if svn >= ident.TCBLevels[i].TCB.ISVSVN {
			return &ident.TCBLevels[i], nil
		}
	}
	return nil, fmt.Errorf("%w: TDX module %s ISVSVN %d is below every module TCB level (lowest %d)", ErrTCBLevelNotFound, ident.ID, svn, ident.TCBLevels[len(ident.TCBLevels)-1].TCB.ISVSVN)
}

// matchTCBLevel returns the first (newest) TCB level that the platform
// reaches: every SGX component of the PCK certificate's CPUSVN and its
// PCESVN at least the level's, and every TDX component of TEE_TCB_SVN at
// least the level's. When TEE_TCB_SVN[1] is not zero, its first two bytes
// are the module's SVN and version, judged by the module identity instead.
func matchTCBLevel(info *TCBInfo, p *pckChain, tee [16]byte) (*TCBLevel, error) {
	start := 0
	if tee[1] > 0 {
		start = 2
	}
levels:
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		if p.pceSVN < l.TCB.PCESVN {
			continue
		}
		for j, c := range l.TCB.SGXComponents {
			if p.cpuSVN[j] < c.SVN {
				continue levels
			}
		}
		for j := start; j < len(tee); j++ {
			if tee[j] < l.TCB.TDXComponents[j].SVN {
				continue levels
			}
		}
		return l, nil
	}
	return nil, fmt.Errorf("%w: CPUSVN %x, PCESVN %d, TEE_TCB_SVN %x are below every TCB level of FMSPC %s",
		ErrTCBLevelNotFound, p.cpuSVN, p.pceSVN, tee, p.fmspc)
}

// enclaveStatus reduces a QE or TDX module level status to the three that
// Intel's convergence rules distinguish.
func enclaveStatus(s tdx.TCBStatus) tdx.TCBStatus {
	switch s {
	case tdx.TCBUpToDate, tdx.TCBRevoked:
		return s
	}
	return tdx.TCBOutOfDate
}

// converge folds the status of a QE or TDX module into the platform's:
// an out-of-date component makes the platform out of date (keeping a
// configuration-needed flag), a revoked one revokes it.
func converge(platform, component tdx.TCBStatus) tdx.TCBStatus {
	switch enclaveStatus(component) {
	case tdx.TCBRevoked:
		return tdx.TCBRevoked
	case tdx.TCBOutOfDate:
		switch platform {
		case tdx.TCBUpToDate, tdx.TCBSWHardeningNeeded:
			return tdx.TCBOutOfDate
		case tdx.TCBConfigurationNeeded, tdx.TCBConfigurationAndSWHardeningNeeded:
			return tdx.TCBOutOfDateConfigurationNeeded
		}
	}
	return platform
}

// tcbVerdict computes the status and advisories of a quote whose
// signatures are verified: the platform TCB level converged with the TDX
// module's and the QE's levels; the advisories are the union of the three.
func tcbVerdict(info *TCBInfo, p *pckChain, body *tdx.TDReport, qe *EnclaveTCBLevel) (tdx.TCBStatus, []string, error) {
	module, err := checkTDXModule(info, body)
	if err != nil {
		return "", nil, err
	}
	level, err := matchTCBLevel(info, p, body.TEETCBSVN)
	if err != nil {
		return "", nil, err
	}
	status := level.TCBStatus
	advisories := appendUnique(nil, level.AdvisoryIDs)
	if module != nil {
		status = converge(status, module.TCBStatus)
		advisories = appendUnique(advisories, module.AdvisoryIDs)
	}
	if status != tdx.TCBRevoked {
		status = converge(status, qe.TCBStatus)
	}
	advisories = appendUnique(advisories, qe.AdvisoryIDs)
	return status, advisories, nil
}

func appendUnique(dst, src []string) []string {
outer:
	for _, s := range src {
		for _, d := range dst {
			if d == s {
				continue outer
			}
		}
		dst = append(dst, s)
	}
	return dst
}
