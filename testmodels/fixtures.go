// Package testmodels provides what lqc's tests run against: the shared
// real fixtures (found through LQC_SHARED), models with seeded weights of
// any size, and a harness that runs real llama.cpp.
package testmodels

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// RepoRoot is the root of the lqc module.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// SharedDir is the folder of shared real fixtures: $LQC_SHARED, or
// ../shared beside the repository.
func SharedDir() string {
	if d := os.Getenv("LQC_SHARED"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "..", "shared")
}

// RequireFixtures reports whether a missing fixture must fail the test
// (LQC_REQUIRE_FIXTURES=1, as CI sets it) rather than skip it.
func RequireFixtures() bool { return os.Getenv("LQC_REQUIRE_FIXTURES") == "1" }

// Shared returns the path of a shared fixture. When it is missing the test
// is skipped, or fails under LQC_REQUIRE_FIXTURES=1.
func Shared(t testing.TB, rel ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{SharedDir()}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		if RequireFixtures() {
			t.Fatalf("fixture %s is missing (LQC_REQUIRE_FIXTURES=1): %v", p, err)
		}
		t.Skipf("fixture %s is missing; set LQC_SHARED to the shared folder", p)
	}
	return p
}
