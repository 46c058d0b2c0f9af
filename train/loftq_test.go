package train

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestLoftQ on the real stories260K at Q4_0: one iteration is exactly the
// SVD init over the plainly quantized model; each iteration leaves less
// of W out of Q + s·B·A than plain quantization and than the one before;
// the targets keep the type lqc convert gives them.
func TestLoftQ(t *testing.T) {
	hf := testmodels.Shared(t, "models", "stories260K", "hf")
	load := func() *ir.Model {
		m, err := frontend.Load(hf, frontend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	q := passes.Quantize{FileType: quant.FileMostlyQ4_0}
	targets, err := ResolveTargets(load(), nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := InitOptions{Rank: 4, Alpha: 8, Targets: targets, Seed: 7}

	one := load()
	ad1, st1, err := LoftQ(one, q, opt, 1)
	if err != nil {
		t.Fatal(err)
	}
	plain := load()
	if _, err := q.Run(plain); err != nil {
		t.Fatal(err)
	}
	svdOpt := opt
	svdOpt.Method, svdOpt.Teacher = "svd", load()
	svd, err := NewAdapter(plain, svdOpt)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range targets {
		for _, pair := range [][2]*ir.Tensor{{ad1.LoRA[name].A, svd.LoRA[name].A}, {ad1.LoRA[name].B, svd.LoRA[name].B}, {one.Weight(name), plain.Weight(name)}} {
			a, _ := pair[0].Bytes()
			b, _ := pair[1].Bytes()
			if pair[0].Type != pair[1].Type || !cmp.Equal(a, b) {
				t.Fatalf("%s: one LoftQ iteration differs from the SVD init over plain Q4_0 (%v against %v)", pair[0].Name, pair[0].Type, pair[1].Type)
			}
		}
	}

	five := load()
	_, st, err := LoftQ(five, q, opt, 5)
	if err != nil {
		t.Fatal(err)
	}
	if st.Plain != st1.Plain || st.After[0] != st1.After[0] {
		t.Errorf("the first of five iterations %v differs from one alone %v", st, st1)
	}
	prev := st.Plain
	for i, e := range st.After {
		if e >= prev {
			t.Errorf("iteration %d: ‖W − Q − s·B·A‖² %.6g, not below %.6g", i+1, e, prev)
		}
		prev = e
	}
	t.Logf("‖W − Q(W)‖² %.5g; after each LoftQ iteration %.5g", st.Plain, st.After)
	for _, name := range targets {
		if got, want := five.Weight(name).Type, plain.Weight(name).Type; got != want {
			t.Errorf("%s: %v after LoftQ, %v from convert", name, got, want)
		}
	}
	if _, _, err := LoftQ(plain, q, opt, 1); err == nil {
		t.Error("LoftQ over an already quantized model: no error")
	}
}
