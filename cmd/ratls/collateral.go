package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/teesql/ratls/dcap"
)

const fetchCollateralHelp = `
Fetches the collateral a quote needs (TCB info and QE identity with their
signatures and issuer chains, the PCK and root CA CRLs) from Intel PCS or a
PCCS, and writes it as QuoteCollateralV3 JSON, for 'ratls verify-quote
--collateral' on a machine with no network access. Nothing is verified here.

Exit status: 0 when the collateral was written; 1 on error; 2 on bad usage.
`

func (c *cli) fetchCollateral(ctx context.Context, args []string) error {
	fs := c.flagSet("fetch-collateral", "--quote FILE [--pccs URL] -o FILE", fetchCollateralHelp)
	var (
		quoteFile = fs.String("quote", "", "the quote `FILE` (binary or hex text); required")
		out       = fs.String("o", "", "output `FILE` (- for stdout); required")
		pccs      = fs.String("pccs", c.getenv(envPCCS), "collateral source `URL` (Intel PCS or a PCCS); default $"+envPCCS+", else "+dcap.IntelPCS)
		timeout   = fs.Duration("timeout", 30*time.Second, "bound on the whole fetch")
	)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *quoteFile == "" || *out == "" {
		return usagef("--quote and -o are required")
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	quote, err := readQuote(*quoteFile)
	if err != nil {
		return err
	}
	v, err := dcap.New(dcap.Options{CollateralURL: *pccs, Logger: c.warnLogger()})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	coll, err := v.FetchCollateral(ctx, quote)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(coll, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "-" {
		_, err = c.stdout.Write(b)
		return err
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %s (%d bytes)%s\n", *out, len(b), collateralSummary(coll))
	return nil
}

// collateralSummary says what the collateral is for and how long it holds,
// read from the (unverified) TCB info.
func collateralSummary(coll *dcap.Collateral) string {
	var info struct {
		FMSPC      string `json:"fmspc"`
		IssueDate  string `json:"issueDate"`
		NextUpdate string `json:"nextUpdate"`
	}
	if json.Unmarshal([]byte(coll.TCBInfo), &info) != nil || info.FMSPC == "" {
		return ""
	}
	return fmt.Sprintf(": FMSPC %s, TCB info issued %s, next update %s", info.FMSPC, info.IssueDate, info.NextUpdate)
}

// writeFileAtomic never leaves a half-written collateral file behind.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ratls-collateral-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
