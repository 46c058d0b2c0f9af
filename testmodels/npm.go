package testmodels

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NpmDir is the folder npm packages for the tests are installed in under
// name: $LQC_CACHE/name, else in the user cache folder.
func NpmDir(name string) string {
	base := os.Getenv("LQC_CACHE")
	if base == "" {
		if d, err := os.UserCacheDir(); err == nil {
			base = filepath.Join(d, "lqc")
		} else {
			base = filepath.Join(os.TempDir(), "lqc-cache")
		}
	}
	return filepath.Join(base, name)
}

// NpmInstall makes sure the npm packages (name@version) are installed in
// NpmDir(name) and returns that folder. It installs into a fresh
// temporary folder and renames it into place, so concurrent test
// processes never see a half-installed package.
func NpmInstall(name string, packages ...string) (string, error) {
	dir := NpmDir(name)
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err == nil {
		return dir, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm not found: the tests need %s", strings.Join(packages, ", "))
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".install-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), []byte(`{"name":"lqc-tests","private":true,"type":"module"}`), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command("npm", append([]string{"install", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"}, packages...)...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install %s: %v\n%s", strings.Join(packages, " "), err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules")); statErr == nil {
			return dir, nil // another process won the race
		}
		return "", err
	}
	return dir, nil
}

// RequireNpm installs packages for a test: it skips the test when that is
// impossible, or fails it under LQC_REQUIRE_FIXTURES=1.
func RequireNpm(t testing.TB, name string, packages ...string) string {
	t.Helper()
	dir, err := NpmInstall(name, packages...)
	if err != nil {
		if RequireFixtures() {
			t.Fatalf("%v (LQC_REQUIRE_FIXTURES=1)", err)
		}
		t.Skip(err)
	}
	return dir
}
