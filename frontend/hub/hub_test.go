package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHub speaks the part of the Hub's protocol huggingface_hub uses:
// the revision listing, HEAD with X-Repo-Commit and (for large files)
// X-Linked-Etag/X-Linked-Size, and GET with byte ranges.
type fakeHub struct {
	files   map[string][]byte
	commit  string
	token   string // required when set
	lfs     bool   // large-file headers and sha256 ETags
	corrupt string // a file served with one byte changed
	mu      sync.Mutex
	ranges  []string // Range headers received
	gets    int
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.token != "" && r.Header.Get("Authorization") != "Bearer "+h.token {
		http.Error(w, "gated", http.StatusUnauthorized)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/api/models/org/tiny/revision/") {
		var sib []map[string]string
		for name := range h.files {
			sib = append(sib, map[string]string{"rfilename": name})
		}
		sib = append(sib, map[string]string{"rfilename": "pytorch_model.bin"})
		json.NewEncoder(w).Encode(map[string]any{"id": "org/tiny", "sha": h.commit, "siblings": sib})
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/org/tiny/resolve/"+h.commit+"/")
	body, found := h.files[name]
	if !ok || !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("X-Repo-Commit", h.commit)
	if h.lfs {
		sum := sha256.Sum256(body)
		w.Header().Set("X-Linked-Etag", `"`+hex.EncodeToString(sum[:])+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(body)))
		w.Header().Set("ETag", `"cdn-etag"`)
	} else {
		s := sha1.New()
		fmt.Fprintf(s, "blob %d\x00", len(body))
		s.Write(body)
		w.Header().Set("ETag", `"`+hex.EncodeToString(s.Sum(nil))+`"`)
	}
	if r.Method == "GET" {
		h.mu.Lock()
		h.gets++
		if rg := r.Header.Get("Range"); rg != "" {
			h.ranges = append(h.ranges, rg)
		}
		h.mu.Unlock()
		if name == h.corrupt {
			body = append([]byte(nil), body...)
			body[0] ^= 1
		}
	}
	http.ServeContent(w, r, name, time.Time{}, strings.NewReader(string(body)))
}

func newHub(t *testing.T) *fakeHub {
	return &fakeHub{commit: strings.Repeat("ab", 20), files: map[string][]byte{
		"config.json":       []byte(`{"model_type": "llama"}`),
		"tokenizer.json":    []byte(`{"model": {}}`),
		"model.safetensors": []byte(strings.Repeat("weights!", 1000)),
	}}
}

func TestDownloadThenCache(t *testing.T) {
	for _, lfs := range []bool{false, true} {
		t.Run(fmt.Sprintf("lfs=%v", lfs), func(t *testing.T) {
			h := newHub(t)
			h.lfs, h.token = lfs, "secret"
			srv := httptest.NewServer(h)
			cache := t.TempDir()
			var progress int64
			o := Options{Cache: cache, Endpoint: srv.URL, Token: "secret", Progress: func(_ string, done, _ int64) { progress = done }}
			dir, err := Resolve(context.Background(), "org/tiny", o)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(cache, "models--org--tiny", "snapshots", h.commit); dir != want {
				t.Errorf("snapshot %s, want %s", dir, want)
			}
			for name, body := range h.files {
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil || string(got) != string(body) {
					t.Errorf("%s: %v, %d bytes of %d", name, err, len(got), len(body))
				}
				if fi, err := os.Lstat(filepath.Join(dir, name)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s is not a link to its blob", name)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "pytorch_model.bin")); err == nil {
				t.Error("downloaded a file lqc does not read")
			}
			if ref, _ := os.ReadFile(filepath.Join(cache, "models--org--tiny", "refs", "main")); string(ref) != h.commit {
				t.Errorf("refs/main holds %q", ref)
			}
			if progress == 0 {
				t.Error("no progress reported")
			}
			// Offline, with the server gone, the cache answers.
			srv.Close()
			o.Offline = true
			again, err := Resolve(context.Background(), "org/tiny@main", o)
			if err != nil || again != dir {
				t.Fatalf("from the cache: %q, %v", again, err)
			}
			if _, err := Resolve(context.Background(), "org/other", o); err == nil || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") {
				t.Errorf("offline and not cached: %v", err)
			}
		})
	}
}

func TestResumeAndVerify(t *testing.T) {
	h := newHub(t)
	h.lfs = true
	srv := httptest.NewServer(h)
	defer srv.Close()
	cache := t.TempDir()
	body := h.files["model.safetensors"]
	sum := sha256.Sum256(body)
	blobs := filepath.Join(cache, "models--org--tiny", "blobs")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, hex.EncodeToString(sum[:])+".incomplete"), body[:3000], 0o644)
	dir, err := Resolve(context.Background(), "org/tiny", Options{Cache: cache, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "model.safetensors")); string(got) != string(body) {
		t.Error("the resumed file differs")
	}
	if len(h.ranges) != 1 || h.ranges[0] != "bytes=3000-" {
		t.Errorf("Range headers %v, want one resuming at 3000", h.ranges)
	}

	h2 := newHub(t)
	h2.lfs, h2.corrupt = true, "model.safetensors"
	srv2 := httptest.NewServer(h2)
	defer srv2.Close()
	cache2 := t.TempDir()
	_, err = Resolve(context.Background(), "org/tiny", Options{Cache: cache2, Endpoint: srv2.URL})
	if err == nil || !strings.Contains(err.Error(), "does not match its hash") {
		t.Fatalf("a corrupt download: %v", err)
	}
	if _, ok := cached(filepath.Join(cache2, "models--org--tiny"), "main"); ok {
		t.Error("a failed download left a complete-looking snapshot")
	}
}

func TestRefusals(t *testing.T) {
	h := newHub(t)
	h.token = "secret"
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, err := Resolve(context.Background(), "org/tiny", Options{Cache: t.TempDir(), Endpoint: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Errorf("a gated repo without a token: %v", err)
	}
	for _, ref := range []string{"org/tiny@../../x", "a/b/c", "/abs/path", "org", "org/name@"} {
		if _, _, ok := Parse(ref); ok {
			t.Errorf("%q parsed as a repo id", ref)
		}
	}
	if repo, rev, ok := Parse("org/name@v1.0"); !ok || repo != "org/name" || rev != "v1.0" {
		t.Errorf("org/name@v1.0: %q %q %v", repo, rev, ok)
	}
}
