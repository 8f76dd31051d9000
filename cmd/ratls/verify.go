package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/teesql/ratls"
	"github.com/teesql/ratls/dcap"
	"github.com/teesql/ratls/tdx"
)

const verifyQuoteHelp = `
Verifies a TDX quote with Intel DCAP (quote and QE report signatures, PCK
chain to the trusted root, CRLs, TCB info and QE identity) and applies the
same policy a ratls connection would: TCB status, debug bit, MRTD allowlist.
The quote file holds the raw quote or its hex text.

Collateral comes from --collateral (QuoteCollateralV3 JSON, as written by
'ratls fetch-collateral'; no network access) or else from --pccs. --at
verifies as of another time (collateral expiry, certificate validity).

A bare quote carries no event log: --compose-hash and --app-id cannot be
established from it and make the quote rejected; --allow-simulator has no
effect here.

--json prints one object with the keys accepted (bool), error, tcb_status,
advisory_ids, fmspc, quote_version, mrtd, td_attributes, debug (hex lower
case without 0x; error is empty when accepted).

Exit status: 0 when the quote is accepted; 1 when it is not or on error; 2 on
bad usage.
`

// quoteResult is the JSON output of verify-quote. Its keys are an interface.
type quoteResult struct {
	Accepted     bool     `json:"accepted"`
	Error        string   `json:"error"`
	TCBStatus    string   `json:"tcb_status"`
	AdvisoryIDs  []string `json:"advisory_ids"`
	FMSPC        string   `json:"fmspc"`
	QuoteVersion uint16   `json:"quote_version"`
	MRTD         string   `json:"mrtd"`
	TDAttributes string   `json:"td_attributes"`
	Debug        bool     `json:"debug"`
}

func (c *cli) verifyQuote(ctx context.Context, args []string) error {
	fs := c.flagSet("verify-quote", "--quote FILE [flags]", verifyQuoteHelp)
	var (
		quoteFile = fs.String("quote", "", "the quote `FILE` (binary or hex text); required")
		collFile  = fs.String("collateral", "", "collateral `FILE` (QuoteCollateralV3 JSON); default: fetch from --pccs")
		at        = fs.String("at", "", "verify as of `TIME` (RFC 3339); default now")
		jsonOut   = fs.Bool("json", false, "print JSON")
		timeout   = fs.Duration("timeout", 30*time.Second, "bound on fetching collateral")
		pf        policyFlags
	)
	pf.register(fs, c.getenv)
	args, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *quoteFile == "" {
		return usagef("--quote is required")
	}
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	pol, err := pf.policy()
	if err != nil {
		return err
	}
	now := time.Now
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return usagef("--at: %v", err)
		}
		now = func() time.Time { return t }
	}
	quote, err := readQuote(*quoteFile)
	if err != nil {
		return err
	}
	var coll *dcap.Collateral
	if *collFile != "" {
		if coll, err = readCollateral(*collFile); err != nil {
			return err
		}
	}
	v, err := c.verifier(&pf, now, c.warnLogger())
	if err != nil {
		return err
	}
	var verifier ratls.Verifier = v
	if coll != nil {
		verifier = fixedCollateral{v: v, coll: coll, now: now}
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := ratls.VerifyQuote(ctx, quote, pol, verifier, ratls.VerifyAt(now()))

	res := quoteResult{AdvisoryIDs: []string{}, Accepted: err == nil}
	if err != nil {
		res.Error = oneLine(err.Error())
	}
	// Show what the quote says even when it was rejected.
	if q, perr := tdx.ParseQuote(quote); perr == nil {
		res.QuoteVersion = q.Header.Version
		res.MRTD = hexs(q.Body.MRTD[:])
		res.TDAttributes = hexs(q.Body.TDAttributes[:])
		res.Debug = q.Body.Debug()
	}
	// A quote refused by the policy alone still has its verdict.
	if rep != nil {
		res.TCBStatus = string(rep.TCBStatus)
		res.FMSPC = rep.FMSPC
		if rep.AdvisoryIDs != nil {
			res.AdvisoryIDs = rep.AdvisoryIDs
		}
	}
	if *jsonOut {
		if err := writeJSON(c.stdout, res); err != nil {
			return err
		}
	} else {
		printQuoteResult(c.stdout, &res)
	}
	return err
}

// fixedCollateral verifies quotes against collateral read from a file, with
// no network access.
type fixedCollateral struct {
	v    *dcap.Verifier
	coll *dcap.Collateral
	now  func() time.Time
}

func (f fixedCollateral) VerifyQuote(ctx context.Context, quote []byte) (*tdx.Verdict, error) {
	return f.v.VerifyWithCollateral(ctx, quote, f.coll, f.now())
}

func readCollateral(path string) (*dcap.Collateral, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var coll dcap.Collateral
	dec := json.NewDecoder(io.LimitReader(f, 16<<20))
	if err := dec.Decode(&coll); err != nil {
		return nil, fmt.Errorf("%s: not QuoteCollateralV3 JSON: %w", path, err)
	}
	return &coll, nil
}

func printQuoteResult(w io.Writer, r *quoteResult) {
	p := func(label, value string) { fmt.Fprintf(w, "  %-14s %s\n", label, value) }
	fmt.Fprintln(w, "Quote")
	p("version", fmt.Sprint(r.QuoteVersion))
	p("MRTD", r.MRTD)
	p("TD attributes", r.TDAttributes)
	p("debug", fmt.Sprint(r.Debug))
	fmt.Fprintln(w, "Verification")
	if r.TCBStatus != "" {
		p("FMSPC", r.FMSPC)
		p("TCB status", r.TCBStatus)
		if len(r.AdvisoryIDs) > 0 {
			p("advisories", strings.Join(r.AdvisoryIDs, ", "))
		}
	}
	if r.Accepted {
		p("result", "accepted")
	} else {
		p("result", "REJECTED: "+r.Error)
	}
}

// verifyTimeout bounds inspect --verify's checks, as a Client's default
// HandshakeTimeout bounds its own.
const verifyTimeout = 30 * time.Second

// verifyLeaf verifies a certificate exactly as a ratls client verifies a
// server's, with the core's own checks.
func (c *cli) verifyLeaf(ctx context.Context, leaf *x509.Certificate, pf *policyFlags) *verification {
	res := &verification{AdvisoryIDs: []string{}}
	rep, err := c.verifyCertificate(ctx, leaf, pf)
	if err != nil {
		res.Error = oneLine(err.Error())
		var tcbErr *ratls.TCBStatusError
		if errors.As(err, &tcbErr) {
			res.TCBStatus = string(tcbErr.Status)
			if tcbErr.AdvisoryIDs != nil {
				res.AdvisoryIDs = tcbErr.AdvisoryIDs
			}
		}
		return res
	}
	res.Accepted = true
	res.TCBStatus = string(rep.TCBStatus)
	res.FMSPC = rep.FMSPC
	if rep.AdvisoryIDs != nil {
		res.AdvisoryIDs = rep.AdvisoryIDs
	}
	return res
}

func (c *cli) verifyCertificate(ctx context.Context, leaf *x509.Certificate, pf *policyFlags) (*ratls.Report, error) {
	pol, err := pf.policy()
	if err != nil {
		return nil, err
	}
	v, err := c.verifier(pf, nil, c.warnLogger())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	return ratls.VerifyCertificate(ctx, leaf, pol, v, ratls.VerifyLogger(c.warnLogger()))
}

// warnLogger passes on the library's warnings (insecure settings) to
// stderr, and nothing else, for one-shot commands.
func (c *cli) warnLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
