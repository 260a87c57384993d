package loadtool

import (
	"encoding/binary"
	"math"
	"os"
	"testing"
)

func TestParseProcStatusReadsRSSAndPeak(t *testing.T) {
	text := "Name:\tdd\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1300000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\nRssAnon:\t   30000 kB\nRssFile:\t   10960 kB\nThreads:\t12\n"
	m, err := ParseProcStatus(text)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 40960*1024 || m.HWM != 51234*1024 || m.Anon != 30000*1024 || m.File != 10960*1024 || m.Threads != 12 {
		t.Errorf("got %+v, want RSS 40960 KiB (30000 anonymous, 10960 file), HWM 51234 KiB, 12 threads", m)
	}
	if _, err := ParseProcStatus("Name:\tdd\nState:\tZ (zombie)\n"); err == nil {
		t.Error("a status without VmRSS parsed without error")
	}
	if _, err := ParseProcStatus("VmRSS:\tlots kB\nVmHWM:\t1 kB\n"); err == nil {
		t.Error("a non-numeric VmRSS parsed without error")
	}
}

func TestParseProcStatCountsFieldsFromTheLastParenthesis(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields: utime 1234, stime 567.
	text := "4242 (dd (role) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 12 0 100 1000000 2000 18446744073709551615\n"
	ticks, err := ParseProcStat(text)
	if err != nil {
		t.Fatal(err)
	}
	if ticks != 1234+567 {
		t.Errorf("ticks = %d, want 1801", ticks)
	}
	if _, err := ParseProcStat("4242 (dd) S 1 2"); err == nil {
		t.Error("a truncated stat parsed without error")
	}
}

func TestReadProcOfThisProcess(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.RSS <= 0 || s.HWM < s.RSS || s.CPUSeconds < 0 {
		t.Errorf("implausible sample of this process: %+v", s)
	}
}

func TestParseAuxvFindsClockTicks(t *testing.T) {
	var auxv []byte
	for _, kv := range [][2]uint64{{6, 4096}, {17, 250}, {0, 0}} {
		auxv = binary.LittleEndian.AppendUint64(auxv, kv[0])
		auxv = binary.LittleEndian.AppendUint64(auxv, kv[1])
	}
	if hz := ParseAuxvClockTicks(auxv); hz != 250 {
		t.Errorf("AT_CLKTCK = %d, want 250", hz)
	}
	if hz := ParseAuxvClockTicks(auxv[:16]); hz != 0 {
		t.Errorf("AT_CLKTCK of an auxv without it = %d, want 0", hz)
	}
}

func TestParseMetricsSumsByLabel(t *testing.T) {
	text := `# HELP dd_queue_depth_events Stored events a consumer has not acknowledged yet.
# TYPE dd_queue_depth_events gauge
dd_queue_depth_events{consumer="bot"} 1234
dd_queue_depth_events{consumer="cache"} 10
dd_gateway_events_received_total 2.5e+06
dd_rest_requests_total{route="POST /channels/{channel_id}/messages",status="200"} 7 1712345678000
dd_odd{a="x,y",b="say \"hi\"\\n"} +Inf

dd_build_info{role="all",version="dev"} 1
`
	ms, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		match []string
		want  float64
	}{
		{"dd_queue_depth_events", []string{"consumer", "bot"}, 1234},
		{"dd_queue_depth_events", nil, 1244},
		{"dd_gateway_events_received_total", nil, 2.5e6},
		{"dd_rest_requests_total", []string{"status", "200"}, 7},
	}
	for _, c := range cases {
		if got := ms.Value(c.name, c.match...); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.match, got, c.want)
		}
	}
	if _, found := ms.Sum("dd_queue_depth_events", "consumer", "nobody"); found {
		t.Error("a label value nobody has matched")
	}
	if v := ms.Value("dd_odd", "a", "x,y", "b", `say "hi"\n`); !math.IsInf(v, 1) {
		t.Errorf("escaped label values: got %v, want +Inf", v)
	}
	for _, bad := range []string{"dd_x{a=\"1\" 3", "dd_x{a=1} 3", "dd_x", "dd_x 1 2 3", "dd_x{a=\"1\"} notanumber"} {
		if _, err := ParseMetrics(bad); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

func TestCrossingInterpolates(t *testing.T) {
	if got := crossing([2]float64{1, 100}, 2, 300, 200); got != 1.5 {
		t.Errorf("crossing = %v, want 1.5", got)
	}
	if got := crossing([2]float64{1, 100}, 2, 100, 200); got != 2 {
		t.Errorf("crossing of a flat counter = %v, want the later time", got)
	}
}

func TestParseMachineStatSumsBusyTime(t *testing.T) {
	text := "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 60 2 30 500 10 2 1 1 7 0\ncpu1 40 3 20 500 10 1 1 0 0 0\nintr 12345\nctxt 999\n"
	busy, total, cores, err := ParseMachineStat(text)
	if err != nil || busy != 100+5+50+3+2+1 || total != 100+5+50+1000+20+3+2+1 || cores != 2 {
		t.Fatalf("busy %d, total %d, cores %d, %v; want 161, 1181, 2", busy, total, cores, err)
	}
	if _, _, _, err := ParseMachineStat("intr 1\n"); err == nil {
		t.Error("no cpu line accepted")
	}
	m, err := ReadMachine()
	if err != nil || m.Cores < 1 || m.BusySeconds <= 0 {
		t.Fatalf("this machine: %+v, %v", m, err)
	}
}
