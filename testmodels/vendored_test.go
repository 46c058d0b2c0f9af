package testmodels

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
)

// The vendored copy must stay the original bytes (same sha256 as the
// shared fixture's README records).
func TestVendoredStories260K(t *testing.T) {
	b, err := os.ReadFile(Stories260K())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696" {
		t.Errorf("stories260K.bin sha256 %s", got)
	}
}
