package main

import (
	"os"
	"runtime/pprof"

	"github.com/spf13/pflag"
)

// profileFlag adds the hidden --cpuprofile flag; call the returned
// function after parsing, and defer what it returns.
func profileFlag(fs *pflag.FlagSet) func() (stop func(), err error) {
	path := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	_ = fs.MarkHidden("cpuprofile")
	return func() (func(), error) {
		if *path == "" {
			return func() {}, nil
		}
		return startCPUProfile(*path)
	}
}

// startCPUProfile profiles the process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
