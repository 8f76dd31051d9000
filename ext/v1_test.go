package ext

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kv is one map entry. The helpers below build V1 envelopes field by field,
// so that tests can reorder, drop, duplicate or mistype any of them.
type kv struct {
	k string
	v func(w *mpWriter)
}

func mpMap(fields ...kv) func(w *mpWriter) {
	return func(w *mpWriter) {
		w.mapHeader(len(fields))
		for _, f := range fields {
			w.str(f.k)
			f.v(w)
		}
	}
}

func mpStr(s string) func(w *mpWriter)  { return func(w *mpWriter) { w.str(s) } }
func mpUint(v uint64) func(w *mpWriter) { return func(w *mpWriter) { w.uint(v) } }
func mpBin(b []byte) func(w *mpWriter)  { return func(w *mpWriter) { w.bin(b) } }
func mpInts(b []byte) func(w *mpWriter) { return func(w *mpWriter) { w.byteArray(b) } }
func mpRaw(b ...byte) func(w *mpWriter) { return func(w *mpWriter) { w.b = append(w.b, b...) } }
func encode(f func(w *mpWriter)) []byte {
	var w mpWriter
	f(&w)
	return w.b
}
func mpArray(items ...func(w *mpWriter)) func(w *mpWriter) {
	return func(w *mpWriter) {
		w.arrayHeader(len(items))
		for _, it := range items {
			it(w)
		}
	}
}

// v1Parts is a valid V1 envelope for the lite testdata, as named parts.
type v1Parts struct {
	version, platform, stack    kv
	platformKind, platformData  kv
	quote, eventLog             kv
	stackKind, stackData        kv
	reportData, runtime, config kv
	events                      []func(w *mpWriter)
	runtimeEvents               []func(w *mpWriter)
	omitVersion                 bool
}

func newV1Parts(t *testing.T) *v1Parts {
	a := mustParse(t, liteEnvelope(t))
	p := &v1Parts{}
	for _, ev := range a.Events {
		p.events = append(p.events, mpMap(
			kv{"imr", mpUint(uint64(ev.IMR))}, kv{"event_type", mpUint(uint64(ev.EventType))},
			kv{"digest", mpBin(ev.Digest)}, kv{"event", mpStr(ev.Event)}, kv{"event_payload", mpBin(ev.Payload)}))
	}
	for _, ev := range runtimeEvents(a) {
		p.runtimeEvents = append(p.runtimeEvents, mpMap(
			kv{"event", mpStr(ev.Event)}, kv{"payload", mpBin(ev.Payload)}, kv{"version", mpUint(1)}))
	}
	p.version = kv{"version", mpUint(1)}
	p.quote = kv{"quote", mpInts(a.Quote)}
	p.platformKind = kv{"kind", mpStr("tdx")}
	p.stackKind = kv{"kind", mpStr(StackDstack)}
	p.reportData = kv{"report_data", mpInts(a.ReportData)}
	p.config = kv{"config", mpStr(a.Config)}
	return p
}

func (p *v1Parts) build() []byte {
	eventLog := p.eventLog
	if eventLog.k == "" {
		eventLog = kv{"event_log", mpArray(p.events...)}
	}
	runtime := p.runtime
	if runtime.k == "" {
		runtime = kv{"runtime_events", mpArray(p.runtimeEvents...)}
	}
	platformData := p.platformData
	if platformData.k == "" {
		platformData = kv{"data", mpMap(p.quote, eventLog)}
	}
	stackData := p.stackData
	if stackData.k == "" {
		stackData = kv{"data", mpMap(p.reportData, runtime, p.config)}
	}
	platform := p.platform
	if platform.k == "" {
		platform = kv{"platform", mpMap(p.platformKind, platformData)}
	}
	stack := p.stack
	if stack.k == "" {
		stack = kv{"stack", mpMap(p.stackKind, stackData)}
	}
	if p.omitVersion {
		return encode(mpMap(platform, stack))
	}
	return encode(mpMap(p.version, platform, stack))
}

func TestV1MatchesUpstreamLayout(t *testing.T) {
	t.Parallel()
	// newV1Parts writes exactly what rmp-serde writes for dstack's types;
	// MarshalEnvelope must produce the same bytes.
	want := newV1Parts(t).build()
	got, err := MarshalEnvelope(mustParse(t, liteEnvelope(t)), EnvelopeV1)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestV1Accepts(t *testing.T) {
	t.Parallel()
	lite := mustParse(t, liteEnvelope(t))
	tests := map[string]func(p *v1Parts){
		"as built": func(p *v1Parts) {},
		"quote as bin": func(p *v1Parts) {
			p.quote = kv{"quote", mpBin(lite.Quote)}
		},
		"report data as bin": func(p *v1Parts) {
			p.reportData = kv{"report_data", mpBin(lite.ReportData)}
		},
		"keys in another order": func(p *v1Parts) {
			p.platform = kv{"platform", mpMap(kv{"data", mpMap(kv{"event_log", mpArray(p.events...)}, p.quote)}, p.platformKind)}
			p.stackData = kv{"data", mpMap(p.config, kv{"runtime_events", mpArray(p.runtimeEvents...)}, p.reportData)}
		},
		"event digest missing and hash_input set": func(p *v1Parts) {
			ev := runtimeEvents(lite)[0]
			p.events[3] = mpMap(kv{"imr", mpUint(3)}, kv{"event_type", mpUint(RuntimeEventType)},
				kv{"event", mpStr(ev.Event)}, kv{"event_payload", mpBin(ev.Payload)}, kv{"version", mpUint(1)},
				kv{"hash_input", mpStr("00")})
		},
		"runtime event without version": func(p *v1Parts) {
			ev := runtimeEvents(lite)[0]
			p.runtimeEvents[0] = mpMap(kv{"payload", mpBin(ev.Payload)}, kv{"event", mpStr(ev.Event)})
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := newV1Parts(t)
			mutate(p)
			a, err := ParseEnvelope(p.build())
			require.NoError(t, err)
			assert.Equal(t, EnvelopeV1, a.Envelope)
			assert.Equal(t, lite.Quote, a.Quote)
			assert.Equal(t, lite.ReportData, a.ReportData)
			assert.Equal(t, lite.Events, a.Events)
			assert.Equal(t, lite.Config, a.Config)
		})
	}
}

func TestV1Rejects(t *testing.T) {
	t.Parallel()
	lite := mustParse(t, liteEnvelope(t))
	tests := []struct {
		name   string
		mutate func(p *v1Parts)
		want   string
	}{
		{"version 2", func(p *v1Parts) { p.version = kv{"version", mpUint(2)} }, "version 2 is not supported"},
		{"version 0", func(p *v1Parts) { p.version = kv{"version", mpUint(0)} }, "version 0 is not supported"},
		{"version as string", func(p *v1Parts) { p.version = kv{"version", mpStr("1")} }, "found a string, want an integer"},
		{"missing version", func(p *v1Parts) { p.omitVersion = true }, `missing key "version"`},
		{"unknown top key", func(p *v1Parts) { p.version = kv{"versions", mpUint(1)} }, "unknown key \"versions\""},
		{"platform kind gcp-tdx", func(p *v1Parts) { p.platformKind = kv{"kind", mpStr("gcp-tdx")} }, `platform kind "gcp-tdx" is not supported`},
		{"platform kind sev-snp", func(p *v1Parts) { p.platformKind = kv{"kind", mpStr("sev-snp")} }, `platform kind "sev-snp"`},
		{"stack kind other", func(p *v1Parts) { p.stackKind = kv{"kind", mpStr("k8s")} }, `stack kind "k8s" is not supported`},
		{"pod without payload", func(p *v1Parts) { p.stackKind = kv{"kind", mpStr(StackDstackPod)} }, `missing key "report_data_payload"`},
		{"payload without pod", func(p *v1Parts) {
			p.stackData = kv{"data", mpMap(p.reportData, kv{"runtime_events", mpArray(p.runtimeEvents...)}, p.config, kv{"report_data_payload", mpStr("x")})}
		}, `unknown key "report_data_payload"`},
		{"missing quote", func(p *v1Parts) { p.platformData = kv{"data", mpMap(kv{"event_log", mpArray(p.events...)})} }, `missing key "quote"`},
		{"missing data", func(p *v1Parts) { p.platform = kv{"platform", mpMap(p.platformKind)} }, `missing key "data"`},
		{"platform as array", func(p *v1Parts) { p.platform = kv{"platform", mpArray()} }, "found an array, want a map"},
		{"duplicate kind", func(p *v1Parts) {
			p.platform = kv{"platform", mpMap(p.platformKind, p.platformKind, kv{"data", mpMap(p.quote, kv{"event_log", mpArray(p.events...)})})}
		}, `duplicate key "kind"`},
		{"unknown event key", func(p *v1Parts) { p.events[0] = mpMap(kv{"imr", mpUint(0)}, kv{"pcr", mpUint(0)}) }, `unknown key "pcr"`},
		{"event missing payload", func(p *v1Parts) {
			p.events[0] = mpMap(kv{"imr", mpUint(0)}, kv{"event_type", mpUint(10)}, kv{"digest", mpBin(lite.Events[0].Digest)}, kv{"event", mpStr("")})
		}, `missing key "event_payload"`},
		{"event imr too big", func(p *v1Parts) { p.events[0] = mpMap(kv{"imr", mpUint(1 << 32)}) }, "4294967296 exceeds 4294967295"},
		{"event log version 2", func(p *v1Parts) {
			ev := runtimeEvents(lite)[0]
			p.events[3] = mpMap(kv{"imr", mpUint(3)}, kv{"event_type", mpUint(RuntimeEventType)},
				kv{"event", mpStr(ev.Event)}, kv{"event_payload", mpBin(ev.Payload)}, kv{"version", mpUint(2)})
		}, "event log version 2 is not supported"},
		{"runtime event version 2", func(p *v1Parts) {
			p.runtimeEvents[0] = mpMap(kv{"event", mpStr("x")}, kv{"payload", mpBin(nil)}, kv{"version", mpUint(2)})
		}, "event log version 2 is not supported"},
		{"report data 63 bytes", func(p *v1Parts) { p.reportData = kv{"report_data", mpInts(lite.ReportData[:63])} }, "report_data is 63 bytes, want 64"},
		{"report data mismatch", func(p *v1Parts) { p.reportData = kv{"report_data", mpInts(make([]byte, 64))} }, "does not match the quote's REPORTDATA"},
		{"runtime events disagree", func(p *v1Parts) { p.runtimeEvents = p.runtimeEvents[1:] }, "runtime_events has 8"},
		{"quote element 256", func(p *v1Parts) { p.quote = kv{"quote", mpArray(mpUint(256))} }, "256 exceeds 255"},
		{"config not UTF-8", func(p *v1Parts) { p.config = kv{"config", mpStr("\xff")} }, "not valid UTF-8"},
		{"config nil", func(p *v1Parts) { p.config = kv{"config", mpRaw(0xc0)} }, "found nil, want a string"},
		{"kind not a string", func(p *v1Parts) { p.stackKind = kv{"kind", mpRaw(0x01)} }, "found an integer, want a string"},
		{"key not a string", func(p *v1Parts) { p.stackData = kv{"data", mpRaw(0x81, 0x01, 0x01)} }, "stack.data key: found an integer, want a string"},
		{"data nested too deep", func(p *v1Parts) {
			deep := make([]byte, 40)
			for i := range deep {
				deep[i] = 0x91
			}
			p.stackData = kv{"data", mpRaw(append(deep, 0)...)}
		}, "nested deeper"},
		{"event log too long", func(p *v1Parts) {
			empty := make([]byte, MaxEvents+1)
			for i := range empty {
				empty[i] = 0x80
			}
			p.eventLog = kv{"event_log", mpRaw(append([]byte{0xdc, 0x10, 0x01}, empty...)...)}
		}, "4097 items exceeds the limit of 4096"},
		{"event log past the end", func(p *v1Parts) { p.eventLog = kv{"event_log", mpRaw(0xdc, 0x10, 0x00)} }, "length 4096 needs at least 4096 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newV1Parts(t)
			tc.mutate(p)
			_, err := ParseEnvelope(p.build())
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "V1: ")
		})
	}

	t.Run("trailing bytes", func(t *testing.T) {
		t.Parallel()
		b := append(newV1Parts(t).build(), 0xc0)
		_, err := ParseEnvelope(b)
		assert.ErrorContains(t, err, "1 trailing bytes")
	})
	t.Run("map16 and map32 markers", func(t *testing.T) {
		t.Parallel()
		for _, marker := range [][]byte{{0xde, 0x00, 0x03}, {0xdf, 0, 0, 0, 3}} {
			b := newV1Parts(t).build()
			b = append(append([]byte(nil), marker...), b[1:]...)
			a, err := ParseEnvelope(b)
			require.NoError(t, err, "%x", marker)
			assert.Equal(t, EnvelopeV1, a.Envelope)
		}
	})
}
