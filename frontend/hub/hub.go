// Package hub finds Hugging Face models by repo id ("org/name[@revision]"):
// in the local Hugging Face cache first, in the layout huggingface_hub
// writes (models--org--name/{refs,snapshots,blobs}), so that models
// already downloaded by Python tools are used in place; else it downloads
// the files lqc reads into that same layout, resuming partial files and
// checking each against the hash the Hub publishes.
package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Options say where the cache and the Hub are; Env fills them from the
// variables huggingface_hub reads.
type Options struct {
	Cache    string // the hub cache folder
	Endpoint string // https://huggingface.co
	Token    string // sent as a bearer token to the endpoint
	Offline  bool   // never touch the network
	Client   *http.Client
	// Progress, when set, hears each file's bytes as they arrive.
	Progress func(file string, done, total int64)
}

// Env is Options as HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN and
// HF_HUB_OFFLINE set them.
func Env() Options {
	o := Options{Cache: os.Getenv("HF_HUB_CACHE"), Endpoint: os.Getenv("HF_ENDPOINT"), Token: os.Getenv("HF_TOKEN")}
	if o.Cache == "" {
		home := os.Getenv("HF_HOME")
		if home == "" {
			if xdg := os.Getenv("XDG_CACHE_HOME"); xdg != "" {
				home = filepath.Join(xdg, "huggingface")
			} else if h, err := os.UserHomeDir(); err == nil {
				home = filepath.Join(h, ".cache", "huggingface")
			}
		}
		o.Cache = filepath.Join(home, "hub")
	}
	if o.Endpoint == "" {
		o.Endpoint = "https://huggingface.co"
	}
	if o.Token == "" {
		o.Token = os.Getenv("HUGGING_FACE_HUB_TOKEN")
	}
	switch strings.ToLower(os.Getenv("HF_HUB_OFFLINE")) {
	case "1", "true", "yes", "on":
		o.Offline = true
	}
	return o
}

var repoID = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z0-9._/-]+))?$`)

// Parse splits "org/name[@revision]"; ok is false for anything else.
func Parse(ref string) (repo, revision string, ok bool) {
	m := repoID.FindStringSubmatch(ref)
	if m == nil || strings.Contains(m[3], "..") {
		return "", "", false
	}
	revision = m[3]
	if revision == "" {
		revision = "main"
	}
	return m[1] + "/" + m[2], revision, true
}

// IsRef reports whether path names a repo rather than a local file: it
// has the form org/name and nothing exists there.
func IsRef(path string) bool {
	if _, _, ok := Parse(path); !ok {
		return false
	}
	_, err := os.Stat(path)
	return errors.Is(err, os.ErrNotExist)
}

// wanted are the files lqc reads from a model or adapter repo.
func wanted(name string) bool {
	if strings.Contains(name, "/") {
		return false
	}
	switch name {
	case "config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
		"special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json", "model.safetensors.index.json",
		"adapter_config.json", "chat_template.jinja":
		return true
	}
	return strings.HasSuffix(name, ".safetensors")
}

var (
	commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha256Hash = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// configs mark a snapshot complete: they are fetched last.
var configs = []string{"config.json", "adapter_config.json"}

// Resolve returns the snapshot folder of ref, downloading what is missing.
func Resolve(ctx context.Context, ref string, o Options) (string, error) {
	repo, rev, ok := Parse(ref)
	if !ok {
		return "", fmt.Errorf("%q is not a Hugging Face repo id (org/name[@revision])", ref)
	}
	root := filepath.Join(o.Cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	if dir, ok := cached(root, rev); ok {
		return dir, nil
	}
	if o.Offline {
		return "", fmt.Errorf("%s: not in the Hugging Face cache (%s) and HF_HUB_OFFLINE is set", ref, root)
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	d := &downloader{o: o, repo: repo, root: root}
	dir, err := d.snapshot(ctx, rev)
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	return dir, nil
}

// cached is the complete snapshot of rev in the cache, if there is one.
func cached(root, rev string) (string, bool) {
	commit := rev
	if !commitHash.MatchString(rev) {
		b, err := os.ReadFile(filepath.Join(root, "refs", filepath.FromSlash(rev)))
		if err != nil {
			return "", false
		}
		commit = strings.TrimSpace(string(b))
	}
	dir := filepath.Join(root, "snapshots", commit)
	for _, f := range configs {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return dir, true
		}
	}
	return "", false
}

type downloader struct {
	o    Options
	repo string
	root string
}

func (d *downloader) request(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if d.o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.o.Token)
	}
	req.Header.Set("User-Agent", "lqc")
	return req, nil
}

func statusError(resp *http.Response, what string) error {
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%s: %s (a gated or private repo needs HF_TOKEN)", what, resp.Status)
	case http.StatusNotFound:
		return fmt.Errorf("%s: not found on the Hub", what)
	}
	return fmt.Errorf("%s: %s", what, resp.Status)
}

// snapshot lists the repo at rev and fetches the files lqc reads.
func (d *downloader) snapshot(ctx context.Context, rev string) (string, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s", d.o.Endpoint, d.repo, url.PathEscape(rev))
	req, err := d.request(ctx, "GET", u)
	if err != nil {
		return "", err
	}
	resp, err := d.o.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", statusError(resp, "listing the repo")
	}
	var info struct {
		SHA      string `json:"sha"`
		Siblings []struct {
			Name string `json:"rfilename"`
		} `json:"siblings"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
		return "", fmt.Errorf("listing the repo: %w", err)
	}
	if !commitHash.MatchString(info.SHA) {
		return "", fmt.Errorf("listing the repo: commit %q is not a hash", info.SHA)
	}
	var files, last []string
	for _, s := range info.Siblings {
		switch {
		case slices.Contains(configs, s.Name):
			last = append(last, s.Name)
		case wanted(s.Name):
			files = append(files, s.Name)
		}
	}
	files = append(files, last...)
	if len(last) == 0 {
		return "", fmt.Errorf("the repo has no config.json or adapter_config.json at the top (GGUF repos: download the .gguf file and give its path)")
	}
	dir := filepath.Join(d.root, "snapshots", info.SHA)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, f := range files {
		if err := d.fetch(ctx, info.SHA, f, dir); err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
	}
	if !commitHash.MatchString(rev) {
		refs := filepath.Join(d.root, "refs", filepath.FromSlash(rev))
		if err := os.MkdirAll(filepath.Dir(refs), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(refs, []byte(info.SHA), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// fetch puts file into the snapshot: a link to its blob, named by its
// ETag, downloaded (or resumed) and checked when it is not there yet.
func (d *downloader) fetch(ctx context.Context, commit, file, dir string) error {
	link := filepath.Join(dir, file)
	if _, err := os.Stat(link); err == nil {
		return nil
	}
	u := fmt.Sprintf("%s/%s/resolve/%s/%s", d.o.Endpoint, d.repo, commit, file)
	// The HEAD is not followed through redirects: the Hub names a large
	// file's content (its sha256) in X-Linked-Etag before sending it to
	// its CDN.
	req, err := d.request(ctx, "HEAD", u)
	if err != nil {
		return err
	}
	noRedirect := *d.o.Client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return statusError(resp, "HEAD")
	}
	etag := resp.Header.Get("X-Linked-Etag")
	if etag == "" {
		etag = resp.Header.Get("ETag")
	}
	etag = strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
	if etag == "" || strings.ContainsAny(etag, `/\`) || etag == "." || etag == ".." {
		return fmt.Errorf("the Hub sent no usable ETag")
	}
	size := int64(-1)
	if s := resp.Header.Get("X-Linked-Size"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	} else if resp.StatusCode == http.StatusOK {
		size = resp.ContentLength
	}
	blob := filepath.Join(d.root, "blobs", etag)
	if _, err := os.Stat(blob); err != nil {
		if err := d.download(ctx, u, file, blob, etag, size); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(link), blob)
	if err != nil {
		return err
	}
	if err := os.Symlink(rel, link); err != nil {
		// Where links are not allowed, a copy serves as huggingface_hub's does.
		return copyFile(blob, link)
	}
	return nil
}

// download fetches u into blob through blob.incomplete, resuming what an
// earlier attempt left, and checks it against the ETag: sha256 for large
// (LFS) files, the git blob hash for small ones.
func (d *downloader) download(ctx context.Context, u, file, blob, etag string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return err
	}
	part := blob + ".incomplete"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	req, err := d.request(ctx, "GET", u)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := d.o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
	case resp.StatusCode == http.StatusOK:
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		have = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have == size:
	default:
		return statusError(resp, "GET")
	}
	if size < 0 && resp.ContentLength >= 0 {
		size = have + resp.ContentLength
	}
	w := &progressWriter{w: f, file: file, done: have, total: size, report: d.o.Progress}
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		if _, err := io.Copy(w, resp.Body); err != nil {
			return err // the partial file stays for the next attempt
		}
	}
	if size >= 0 && w.done != size {
		return fmt.Errorf("got %d bytes of %d", w.done, size)
	}
	if err := verify(f, etag, w.done); err != nil {
		f.Close()
		os.Remove(part)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(part, blob)
}

// verify checks f's content against the ETag when the ETag is a hash.
func verify(f *os.File, etag string, size int64) error {
	var h hash.Hash
	switch {
	case sha256Hash.MatchString(etag):
		h = sha256.New()
	case commitHash.MatchString(etag):
		h = sha1.New()
		fmt.Fprintf(h, "blob %d\x00", size)
	default:
		return nil // an opaque ETag: nothing to check against
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != etag {
		return fmt.Errorf("the download does not match its hash (%s, the Hub says %s); it was removed", got, etag)
	}
	return nil
}

type progressWriter struct {
	w           io.Writer
	file        string
	done, total int64
	report      func(string, int64, int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.report != nil {
		p.report(p.file, p.done, p.total)
	}
	return n, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
