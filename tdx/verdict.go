package tdx

import "time"

// TCBStatus is the TCB level status that Intel's collateral assigns to the
// platform and TDX module that produced a quote.
type TCBStatus string

// The statuses Intel's TCB info can assign.
const (
	TCBUpToDate                          TCBStatus = "UpToDate"
	TCBSWHardeningNeeded                 TCBStatus = "SWHardeningNeeded"
	TCBConfigurationNeeded               TCBStatus = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded TCBStatus = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         TCBStatus = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      TCBStatus = "OutOfDateConfigurationNeeded"
	TCBRevoked                           TCBStatus = "Revoked"
)

// Verdict is what a quote verifier concluded about a quote whose signatures,
// certificate chain and collateral it checked.
type Verdict struct {
	// Quote is the parsed quote that was verified.
	Quote *Quote
	// TCBStatus is the status of the matching TCB level.
	TCBStatus TCBStatus
	// AdvisoryIDs lists Intel security advisories (INTEL-SA-XXXXX) that
	// apply to the matching TCB level.
	AdvisoryIDs []string
	// FMSPC is the platform's FMSPC, upper-case hex.
	FMSPC string
	// ValidUntil is the moment the verdict stops holding: the earliest
	// expiry of the collateral and certificates it relied on. Zero means the
	// verifier gives no bound.
	ValidUntil time.Time
}
