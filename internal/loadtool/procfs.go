package loadtool

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ProcMemory is what /proc/PID/status says about a process's memory, in bytes.
type ProcMemory struct {
	RSS     int64 // VmRSS: resident now
	HWM     int64 // VmHWM: the highest RSS since the process started
	Anon    int64 // RssAnon: the part of RSS that is the process's own memory (heap, stacks)
	File    int64 // RssFile: the part that is mapped files (Badger's memory-mapped tables and value log)
	Threads int
}

// ParseProcStatus reads VmRSS, VmHWM, RssAnon, RssFile and Threads from the text of /proc/PID/status.
func ParseProcStatus(text string) (ProcMemory, error) {
	var m ProcMemory
	found := 0
	for line := range strings.SplitSeq(text, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "VmRSS", "VmHWM", "RssAnon", "RssFile":
			num, unit, _ := strings.Cut(val, " ")
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || (unit != "kB" && unit != "") {
				return m, fmt.Errorf("/proc status: %s: %q is not a size in kB", key, val)
			}
			switch key {
			case "VmRSS":
				m.RSS = n * 1024
				found++
			case "VmHWM":
				m.HWM = n * 1024
				found++
			case "RssAnon":
				m.Anon = n * 1024
			case "RssFile":
				m.File = n * 1024
			}
		case "Threads":
			m.Threads, _ = strconv.Atoi(val)
		}
	}
	if found < 2 {
		return m, fmt.Errorf("/proc status: no VmRSS and VmHWM lines (a zombie process has none)")
	}
	return m, nil
}

// ParseProcStat returns utime + stime, in clock ticks, from the text of /proc/PID/stat. The command
// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted
// from the last ')'.
func ParseProcStat(text string) (ticks int64, err error) {
	end := strings.LastIndexByte(text, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc stat: no ')' after the command name in %.80q", text)
	}
	fields := strings.Fields(text[end+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(fields))
	}
	u, err1 := strconv.ParseInt(fields[11], 10, 64)
	s, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc stat: utime %q, stime %q are not numbers", fields[11], fields[12])
	}
	return u + s, nil
}

// ProcSample is one reading of a process's memory and CPU time.
type ProcSample struct {
	ProcMemory
	CPUSeconds float64 // user + system since the process started
}

// ReadProc reads /proc/PID/status and /proc/PID/stat.
func ReadProc(pid int) (ProcSample, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, err
	}
	mem, err := ParseProcStatus(string(status))
	if err != nil {
		return ProcSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, err
	}
	ticks, err := ParseProcStat(string(stat))
	if err != nil {
		return ProcSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return ProcSample{ProcMemory: mem, CPUSeconds: float64(ticks) / float64(clockTicks())}, nil
}

var clockTicks = sync.OnceValue(func() int64 {
	auxv, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	if hz := ParseAuxvClockTicks(auxv); hz > 0 {
		return hz
	}
	return 100
})

// ParseAuxvClockTicks returns AT_CLKTCK (the unit of /proc/PID/stat's times, sysconf(_SC_CLK_TCK)) from
// the bytes of /proc/self/auxv on a 64-bit little-endian machine, or 0 if it is not there.
func ParseAuxvClockTicks(auxv []byte) int64 {
	const atClkTck = 17
	for i := 0; i+16 <= len(auxv); i += 16 {
		typ := binary.LittleEndian.Uint64(auxv[i:])
		val := binary.LittleEndian.Uint64(auxv[i+8:])
		if typ == 0 {
			break
		}
		if typ == atClkTck {
			return int64(val)
		}
	}
	return 0
}

// procSelfPID is this process, for the receiver's own CPU time.
var procSelfPID = os.Getpid()

// ParseMachineStat returns the machine's busy and total CPU time, in clock ticks over all cores, and
// its cores, from the text of /proc/stat: the "cpu" line sums user, nice, system, idle, iowait, irq,
// softirq and steal (guest time is inside user already); idle and iowait are not busy. Cores are the
// "cpuN" lines.
func ParseMachineStat(text string) (busy, total int64, cores int, err error) {
	found := false
	for line := range strings.Lines(text) {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			cores++
			continue
		}
		if len(fields) < 9 {
			return 0, 0, 0, fmt.Errorf("/proc/stat: %d fields on the cpu line, want at least 9", len(fields))
		}
		for i, f := range fields[1:9] {
			n, perr := strconv.ParseInt(f, 10, 64)
			if perr != nil {
				return 0, 0, 0, fmt.Errorf("/proc/stat: %q is not a number", f)
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		found = true
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("/proc/stat: no cpu line")
	}
	return busy, total, cores, nil
}

// MachineSample is one reading of the machine's CPU time.
type MachineSample struct {
	BusySeconds float64 // all cores, since boot
	Cores       int
}

// ReadMachine reads /proc/stat.
func ReadMachine() (MachineSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineSample{}, err
	}
	busy, _, cores, err := ParseMachineStat(string(b))
	if err != nil {
		return MachineSample{}, err
	}
	return MachineSample{BusySeconds: float64(busy) / float64(clockTicks()), Cores: cores}, nil
}
