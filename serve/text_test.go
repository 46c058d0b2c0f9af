package serve

import (
	"strings"
	"testing"
)

func TestTextStream(t *testing.T) {
	for _, c := range []struct {
		name    string
		stops   []string
		pieces  []string
		want    string
		stopped bool
	}{
		{"plain", nil, []string{"Hel", "lo", " world"}, "Hello world", false},
		{"stop inside a piece", []string{"\n\n"}, []string{"one", "\n\nTwo"}, "one", true},
		{"stop across pieces", []string{"END"}, []string{"abc E", "N", "Dxyz"}, "abc ", true},
		{"prefix of a stop that does not finish", []string{"END"}, []string{"abc EN", "Z"}, "abc ENZ", false},
		{"earliest of two stops", []string{"b", "a"}, []string{"xxab"}, "xx", true},
		{"UTF-8 split over tokens", nil, []string{"caf", "\xc3", "\xa9!"}, "café!", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := &textStream{stops: c.stops}
			var sb strings.Builder
			stopped := false
			for _, p := range c.pieces {
				out, st := ts.add([]byte(p))
				if strings.ContainsRune(out, '\uFFFD') {
					t.Fatalf("sent a broken character: %q", out)
				}
				sb.WriteString(out)
				if st {
					stopped = true
					break
				}
			}
			if !stopped {
				sb.WriteString(ts.flush())
			}
			if sb.String() != c.want || stopped != c.stopped {
				t.Errorf("got %q (stopped %v), want %q (stopped %v)", sb.String(), stopped, c.want, c.stopped)
			}
		})
	}
}
