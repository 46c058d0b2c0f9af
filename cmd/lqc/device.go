package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/cuda"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
	"github.com/lqc-dev/lqc/runtime/cuda/libcuda"
	"github.com/lqc-dev/lqc/runtime/cuda/sim"
)

const deviceHelp = "where the model runs: cpu, cuda (GPU 0; cuda:N for GPU N), auto (cuda when a usable GPU exists, else cpu), or cuda-sim (the CUDA backend's kernels interpreted on the CPU by lqc's PTX simulator: slow, for tests and debugging)"

func addDeviceFlag(fs *pflag.FlagSet, device *string) {
	fs.StringVar(device, "device", "cpu", deviceHelp)
}

// newBackend opens the backend --device names; threads is the CPU
// backend's.
func newBackend(device string, threads int, stderr io.Writer) (lqrt.Backend, error) {
	open := func(drv driver.Driver, err error) (lqrt.Backend, error) {
		if err != nil {
			return nil, err
		}
		b, err := cuda.New(drv)
		if err != nil {
			drv.Close()
			return nil, err
		}
		return b, nil
	}
	switch {
	case device == "" || device == "cpu":
		return cpu.New(threads), nil
	case device == "cuda-sim":
		return open(sim.New(), nil)
	case device == "auto":
		if b, err := open(libcuda.Open(0)); err == nil {
			return b, nil
		} else if stderr != nil {
			fmt.Fprintf(stderr, "note: running on the CPU (%v)\n", err)
		}
		return cpu.New(threads), nil
	case device == "cuda" || strings.HasPrefix(device, "cuda:"):
		ordinal := 0
		if s, ok := strings.CutPrefix(device, "cuda:"); ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return nil, usageError{fmt.Errorf("--device %q: want cuda:N with N a GPU's number", device)}
			}
			ordinal = n
		}
		return open(libcuda.Open(ordinal))
	}
	return nil, usageError{fmt.Errorf("--device %q: want cpu, cuda, cuda:N, auto or cuda-sim", device)}
}

// printDevices lists the GPUs for lqc inspect --devices.
func printDevices(w io.Writer, asJSON bool) error {
	devs, err := libcuda.Devices()
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return fmt.Errorf("cuda: the driver sees no GPU")
	}
	if asJSON {
		type device struct {
			Device  string `json:"device"`
			Name    string `json:"name"`
			Memory  int64  `json:"memory_bytes"`
			Compute string `json:"compute_capability"`
			Driver  string `json:"driver"`
		}
		out := make([]device, len(devs))
		for i, d := range devs {
			out[i] = device{fmt.Sprintf("cuda:%d", i), d.Name, d.Memory, fmt.Sprintf("%d.%d", d.Major, d.Minor), d.Driver}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for i, d := range devs {
		fmt.Fprintf(w, "cuda:%d  %s\n", i, d)
	}
	return nil
}
