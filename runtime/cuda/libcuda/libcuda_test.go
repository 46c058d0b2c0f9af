//go:build linux && !nocuda

package libcuda

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// On machines without a GPU (CI), what a user sees: one line naming what
// was looked for. A real library without the driver's symbols (libc)
// is refused by name, which also checks that purego's dlopen works in a
// binary built without cgo.
func TestLoadErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "libcuda.so.1")
	_, err := loadFrom([]string{missing})
	if err == nil || !strings.Contains(err.Error(), "libcuda.so.1 not found") || !strings.Contains(err.Error(), "/usr/lib/wsl/lib") {
		t.Errorf("no library: %v", err)
	}
	libc := ""
	for _, p := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6", "/usr/lib/libc.so.6"} {
		if _, err := os.Stat(p); err == nil {
			libc = p
			break
		}
	}
	if libc == "" {
		t.Fatal("no glibc found to stand in for a library without the driver's symbols")
	}
	_, err = loadFrom([]string{missing, libc})
	if err == nil || !strings.Contains(err.Error(), libc+" lacks cuInit") {
		t.Errorf("libc as the driver: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("the error is not one line: %q", err)
	}
}

func TestRoundSize(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{{1, 512}, {512, 512}, {513, 1024}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20}, {5 << 20, 6 << 20}} {
		if got := roundSize(c.in); got != c.want {
			t.Errorf("roundSize(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}
