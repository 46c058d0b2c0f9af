package runtime_test

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/quant/imatrix"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestCalibrateMatchesLlamaCpp recomputes the golden importance matrix from
// its calibration text with llama-imatrix's settings (-c 128) and compares
// it with llama.cpp's.
func TestCalibrateMatchesLlamaCpp(t *testing.T) {
	m, err := frontend.Load(testmodels.Shared(t, "golden/quant/input-f32.gguf"), frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(testmodels.Shared(t, "golden/quant/imatrix-calib.txt"))
	if err != nil {
		t.Fatal(err)
	}
	b := cpu.New(2)
	defer b.Close()
	rm, err := runtime.Load(m, b)
	if err != nil {
		t.Fatal(err)
	}
	st, err := runtime.Calibrate(context.Background(), rm, tok.Encode(string(text), true), runtime.CalibrateOptions{Ctx: 128, BOS: m.Vocab.BOS, Dataset: "imatrix-calib.txt", Gram: true})
	if err != nil {
		t.Fatal(err)
	}
	// q, k and v multiply one activation: one set of statistics, whose
	// Gram diagonal is the importance.
	in := st.Inputs["blk.1.attn_q.weight"]
	if in == nil || in != st.Inputs["blk.1.attn_v.weight"] || in.Count != 4992 {
		t.Fatalf("blk.1 attention input statistics: %+v", in)
	}
	for j := range in.Cols {
		if g := in.Gram[j*in.Cols+j]; math.Abs(g-in.SumSq[j]) > 1e-9*in.SumSq[j] {
			t.Fatalf("Gram diagonal %g != Σx² %g", g, in.SumSq[j])
		}
	}
	got := st.Imatrix(false)
	want, err := imatrix.Read(testmodels.Shared(t, "golden/quant/imatrix.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ChunkCount != want.ChunkCount || got.ChunkSize != 128 {
		t.Errorf("chunks %d of %d, want %d of 128", got.ChunkCount, got.ChunkSize, want.ChunkCount)
	}
	if diff := cmp.Diff(want.Names(), got.Names()); diff != "" {
		t.Fatalf("entries (-llama.cpp +lqc):\n%s", diff)
	}
	worst := 0.0
	for name, we := range want.Entries {
		ge := got.Entries[name]
		if ge.Count != we.Count {
			t.Errorf("%s: %g tokens, want %g", name, ge.Count, we.Count)
		}
		gw, ww := ge.Weights(), we.Weights()
		for j := range ww {
			if ww[j] == 0 {
				if gw[j] != 0 {
					t.Errorf("%s[%d] = %g, want exactly 0", name, j, gw[j])
				}
				continue
			}
			worst = max(worst, math.Abs(float64(gw[j]-ww[j]))/float64(ww[j]))
		}
	}
	t.Logf("largest relative difference from llama.cpp's importance: %.2g", worst)
	if worst > 1e-3 {
		t.Errorf("largest relative difference %.3g > 1e-3", worst)
	}
}
