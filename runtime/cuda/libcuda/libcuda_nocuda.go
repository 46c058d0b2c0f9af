//go:build !linux || nocuda

package libcuda

import (
	"errors"

	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

var errNoCUDA = errors.New("cuda: this lqc was built without CUDA support (build tag nocuda, or a system other than Linux)")

// Devices fails: the binary has no driver access.
func Devices() ([]driver.DeviceInfo, error) { return nil, errNoCUDA }

// Open fails: the binary has no driver access.
func Open(int) (driver.Driver, error) { return nil, errNoCUDA }
