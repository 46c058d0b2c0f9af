package testmodels

import "path/filepath"

// Stories260K is the path of the vendored stories260K llama2.c checkpoint
// (MIT, see testdata/stories260K/LICENSE.md); its tokenizer tok512.bin
// lies beside it.
func Stories260K() string {
	return filepath.Join(RepoRoot(), "testmodels", "testdata", "stories260K", "stories260K.bin")
}
