package siptest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime/stime in /proc/PID/stat: 100 on every Linux
// architecture Go supports (sysconf(_SC_CLK_TCK) would need cgo).
const clockTick = 100

// Usage is what a process (or a group of them) has used so far.
type Usage struct {
	// CPU is user plus system time (utime+stime of /proc/PID/stat).
	CPU time.Duration
	// RSS is the resident set size; for a group it is the sum of the proportional set sizes
	// (Pss of /proc/PID/smaps_rollup), so memory the processes share is counted once.
	RSS int64
	// Procs is how many processes were counted.
	Procs int
}

// ProcessUsage reads the CPU time and the RSS of one process from /proc.
func ProcessUsage(pid int) (Usage, error) {
	stat, err := readStat(pid)
	if err != nil {
		return Usage{}, err
	}
	rss, err := statusKB(pid, "VmRSS:")
	if err != nil {
		return Usage{}, err
	}
	return Usage{CPU: stat.cpu, RSS: rss << 10, Procs: 1}, nil
}

// GroupUsage sums the CPU time and the proportional set size of every process whose process
// group is pgid (Kamailio forks its workers into the group of its main process).
func GroupUsage(pgid int) (Usage, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid {
			continue // gone meanwhile, or another group
		}
		pss, err := rollupKB(pid, "Pss:")
		if err != nil {
			continue
		}
		u.CPU += st.cpu
		u.RSS += pss << 10
		u.Procs++
	}
	if u.Procs == 0 {
		return u, fmt.Errorf("siptest: no process in group %d", pgid)
	}
	return u, nil
}

type procStat struct {
	pgrp int
	cpu  time.Duration
}

// readStat parses /proc/PID/stat (proc(5)): the command name is in parentheses and may hold
// blanks, so fields are counted after its closing parenthesis.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("siptest: unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15).
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("siptest: short /proc/%d/stat", pid)
	}
	pgrp, err1 := strconv.Atoi(f[2])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, fmt.Errorf("siptest: unreadable /proc/%d/stat", pid)
	}
	return procStat{pgrp: pgrp, cpu: time.Duration(ut+st) * time.Second / clockTick}, nil
}

func statusKB(pid int, key string) (int64, error) {
	return kbField(filepath.Join("/proc", strconv.Itoa(pid), "status"), key)
}

func rollupKB(pid int, key string) (int64, error) {
	return kbField(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"), key)
}

// kbField reads "Key:   1234 kB" from a /proc file.
func kbField(file, key string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("siptest: no %s in %s", key, file)
}
