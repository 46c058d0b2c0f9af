package train

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

// ResetPeakRSS starts a new measurement of the process's peak resident
// memory (Linux: /proc/self/clear_refs 5), so that each run of a sweep
// reports its own peak.
func ResetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// PeakRSS is the peak resident memory since the start or the last
// ResetPeakRSS (VmHWM), in bytes; 0 where the system does not say.
func PeakRSS() int64 { return procKB("/proc/self/status", "VmHWM:") }

// MemAvailable is Linux's estimate of the memory a new process can use
// without swapping (/proc/meminfo's MemAvailable), in bytes; 0 where the
// system does not say.
func MemAvailable() int64 { return procKB("/proc/meminfo", "MemAvailable:") }

// procKB reads a "key: N kB" line of a /proc file, in bytes.
func procKB(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return 0
}

// LeanGC has the garbage collector run when the heap has grown by a
// fifth rather than doubled (Go's default), unless GOGC says otherwise.
// Training's memory is large pointer-free activation buffers, which cost
// the collector almost nothing to scan but which the default would let
// pile up to twice the live set: GiBs on a 1B model.
func LeanGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(LeanGCPercent)
	}
}

// LeanGCPercent is the GOGC LeanGC sets.
const LeanGCPercent = 20
