package serve

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLoadingAndLimits: while loading, /health and the API say 503; the
// API key guards everything but /health and /metrics; a body over the
// limit is refused with 413 before it is parsed.
func TestLoadingAndLimits(t *testing.T) {
	srv := NewServer("key", nil, NewMetrics())
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	do := func(method, path, key, body string) (int, string) {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		method, path, key string
		want              int
	}{
		{"GET", "/health", "", 503},
		{"GET", "/v1/models", "key", 503},
		{"GET", "/v1/models", "", 401},
		{"GET", "/metrics", "", 200},
	} {
		if code, body := do(c.method, c.path, c.key, ""); code != c.want {
			t.Errorf("%s %s while loading: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
	srv.Ready(&Backend{BaseID: "m"})
	srv.MaxBody = 100
	if code, _ := do("GET", "/health", "", ""); code != 200 {
		t.Errorf("/health when ready: %d", code)
	}
	code, body := do("POST", "/v1/chat/completions", "key", `{"messages": [{"role": "user", "content": "`+strings.Repeat("x", 200)+`"}]}`)
	if code != 413 || !strings.Contains(body, "larger than 100 bytes") {
		t.Errorf("a 200-byte body over a 100-byte limit: %d %s", code, body)
	}
}
